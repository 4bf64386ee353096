"""What a rollout engine provides: n sampled continuations of each of a chunk of prompts, as typed rows.

An engine is chosen by name (`--decoder auto|lean|hf|llamacpp`); a new one (vLLM, SGLang) is one file that
registers itself here and in `engines/__init__.py`. Whatever the engine, a row's tokens are drawn from
softmax(z / T) (nucleus-filtered when top_p < 1), the distribution the backend scores in the update; an engine
that is not exactly the policy (quantized weights) also returns its own log-probs for the importance correction.
Shared here: the exact sampler `pick` and the per-token statistics, so every engine means the same by a seed.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..rollout import Prompt, TokenStats


@dataclass(frozen=True)
class SampleOptions:
    temperature: float | None  # None = greedy
    top_p: float
    max_new_tokens: int
    eos_ids: frozenset[int]
    seed: int
    want_stats: bool = False  # record TokenStats per token


@dataclass(frozen=True)
class Sample:
    """One sampled continuation, before detokenising (the backend turns it into a Completion)."""

    prompt_ids: tuple[int, ...]
    ids: tuple[int, ...]  # cut after the first EOS (kept) or at the budget
    finished: bool  # stopped by EOS rather than by the budget
    stats: TokenStats | None = None
    sampler_logprobs: np.ndarray | None = None  # log-probs under the engine's own distribution, when not exact


@dataclass
class Decoded:
    """A batch of rows as a decode loop returns them (prompt-major: prompt 0's n rows, then prompt 1's ...)."""

    tokens: list[list[int]]
    finished: list[bool]
    stats: list[tuple] | None  # per row (logprobs, entropy, self_certainty) float arrays, when asked
    sampler_logp: list | None = None  # per row log softmax(z / T) of the drawn tokens (inexact engines)

    def samples(self, prompt_ids: Sequence[tuple[int, ...]], n: int) -> list[list[Sample]]:
        rows = [Sample(prompt_ids[r // n], tuple(self.tokens[r]), self.finished[r],
                       None if self.stats is None else TokenStats(*self.stats[r]),
                       None if self.sampler_logp is None else self.sampler_logp[r]) for r in range(len(self.tokens))]
        return [rows[i * n:(i + 1) * n] for i in range(len(prompt_ids))]


class Engine:
    """Samples for one backend. `session()` wraps a whole generate call (weights prepared once for all its
    chunks); `sample` handles one chunk of prompts."""

    def __init__(self, backend):
        self.backend = backend

    def session(self):
        return contextlib.nullcontext()

    def sample(self, prompts: Sequence[Prompt], n: int, opts: SampleOptions) -> list[list[Sample]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class EngineSpec:
    name: str
    cls: Callable[[Any], Engine]
    supports: Callable[[Any], str | None]  # backend -> None, or why this engine cannot serve it
    help: str


ENGINES: dict[str, EngineSpec] = {}


def register_engine(name: str, help: str, supports: Callable[[Any], str | None] = lambda b: None):
    def deco(cls):
        ENGINES[name] = EngineSpec(name, cls, supports, help)
        return cls

    return deco


def all_engines() -> dict[str, EngineSpec]:
    from . import _load_all  # noqa: F401  (registers the built-in engines)

    return ENGINES


def pick(logits: torch.Tensor, temperature: float | None, top_p: float, generator: torch.Generator | None):
    """Next tokens [B] from raw logits [B, V]: greedy when temperature is None, else an exact draw from
    softmax(z / T) (nucleus-filtered when top_p < 1) by inverting its cumulative sum, which is several
    times cheaper on CPU than torch.multinomial over a 50k vocabulary."""
    if temperature is None:
        return logits.argmax(-1)
    z = logits.float() / temperature
    weights = (z - z.amax(-1, keepdim=True)).exp_()  # unnormalised probabilities
    order = None
    if top_p < 1.0:
        weights, order = weights.sort(dim=-1, descending=True)
        mass = weights.cumsum(-1)
        # keep the smallest prefix whose share reaches top_p (the first token always stays)
        weights = weights.masked_fill(mass - weights > top_p * mass[:, -1:], 0.0)
    cdf = weights.cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    tok = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
    return tok if order is None else order.gather(-1, tok[:, None]).squeeze(-1)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded attention mask: padding must not shift positions (as in generate)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def token_stats(logits: torch.Tensor, tokens: torch.Tensor, temperature: float | None = None) -> tuple[torch.Tensor, ...]:
    """(log-prob of each chosen token, entropy, self-certainty) as float [B], from raw logits [B, V] of the
    distribution that was sampled, softmax(z / T) (T = 1 for greedy), as the TTRL/URLVR code computes them."""
    logp = torch.log_softmax(logits.float() / (temperature or 1.0), dim=-1)
    chosen = logp.gather(-1, tokens[:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    certainty = -logp.mean(-1) - math.log(logp.shape[-1])  # KL(uniform || p), Kang et al. 2025
    return chosen, entropy, certainty


