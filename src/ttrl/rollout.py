"""Typed rollout structures shared by policy backends, the trainer and rewards."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenStats:
    """Per generated token, from the distribution the token was drawn from, softmax(z / T) at the sampling
    temperature (T = 1 for greedy), recorded while sampling (no second forward pass), as the TTRL/URLVR code
    computes them. Used by certainty rewards (URLVR; Kang et al. 2025) and the collapse monitor."""

    logprobs: np.ndarray  # log p(sampled token)
    entropy: np.ndarray  # H(p) = -sum_j p_j log p_j
    self_certainty: np.ndarray  # KL(U || p) = -log V - mean_j log p_j


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: chat-templated text plus the image (or audio) paths it refers to (in order)."""

    text: str
    images: tuple[str, ...] = ()
    audio: tuple[str, ...] = ()  # speech models: the clip the decoder prompt transcribes

    def __add__(self, suffix: str) -> Prompt:  # prefill the reply, e.g. prompt + "Score:"
        return Prompt(self.text + suffix, self.images, self.audio)


@dataclass(frozen=True)
class Completion:
    prompt_ids: tuple[int, ...]
    ids: tuple[int, ...]  # generated tokens, ending with EOS when the model stopped by itself
    text: str
    finished: bool  # stopped by EOS rather than by the token budget
    stats: TokenStats | None = None  # filled when a reward asks for token statistics
    images: tuple[str, ...] = ()  # the prompt's images, needed again to score the completion
    # log-prob of each token under the distribution it was drawn from (softmax(z / T) of the rollout engine),
    # kept only when that engine is not the policy itself (quantized weights): the update corrects for it
    sampler_logprobs: np.ndarray | None = None
    audio: tuple[str, ...] = ()  # the prompt's audio, needed again to score the completion (speech models)
