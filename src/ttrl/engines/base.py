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


class DecodeRows:
    """The row bookkeeping of a batched decode loop, shared by every loop that decodes with a cache (engines/lean.py,
    backends/speech_decode.py): what each original row drew, which rows finished, and which original row each
    batch row is once finished rows have left the batch.

    Finished rows leave once they make up `prune_fraction` of the batch: dropping them at every finish would copy
    the cache more often than it saves."""

    def __init__(self, rows: int, steps: int, device, want_stats: bool, prune_fraction: float = 0.25):
        self.tokens = torch.zeros(rows, steps, dtype=torch.long, device=device)
        self.stats = torch.zeros(3, rows, steps, device=device) if want_stats else None
        self.length = torch.zeros(rows, dtype=torch.long, device=device)
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)
        self.alive = torch.arange(rows, device=device)  # original row of each batch row
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)  # finished rows still in the batch
        self.prune_fraction = prune_fraction

    def record(self, t: int, tok: torch.Tensor, eos: torch.Tensor,
               stats_of: Callable[[torch.Tensor], Sequence[torch.Tensor]] | None = None) -> bool:
        """Token t of every batch row (finished rows' draws are ignored); stats_of(live mask) gives the 3 statistics
        of the live rows. True once every row has finished."""
        live = ~self.done
        idx = self.alive[live]
        self.tokens[idx, t] = tok[live]
        self.length[idx] = t + 1
        if self.stats is not None:
            for k, s in enumerate(stats_of(live)):
                self.stats[k, idx, t] = s
        ended = live & torch.isin(tok, eos)
        self.finished[self.alive[ended]] = True
        self.done |= ended
        return bool(self.done.all())

    def prune(self) -> torch.Tensor | None:
        """The batch rows to keep when enough have finished (the caller selects them in its cache and tensors),
        else None."""
        if int(self.done.sum()) < max(1, self.prune_fraction * len(self.alive)):
            return None
        keep = (~self.done).nonzero().squeeze(-1)
        self.alive, self.done = self.alive[keep], self.done[keep]
        return keep

    def decoded(self) -> Decoded:
        lens, toks = self.length.tolist(), self.tokens.tolist()
        rows_stats = None
        if self.stats is not None:
            s = self.stats.cpu().numpy()
            rows_stats = [tuple(s[k, r, :lens[r]] for k in range(3)) for r in range(len(lens))]
        return Decoded([toks[r][:lens[r]] for r in range(len(lens))], self.finished.tolist(), rows_stats)


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


