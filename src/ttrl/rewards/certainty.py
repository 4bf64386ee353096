"""Certainty rewards from the policy's own token distributions (URLVR, TTRL authors, ICLR 2026).

They read `Group.token_stats`, recorded by the sampler from the distribution it sampled (softmax(z / T)
at the rollout temperature, as the URLVR code does), so they cost no second
forward pass. All of them "rise then fall" under training: pair them with the collapse monitor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import Group, RewardContext, RewardOutput, register_reward


@dataclass(frozen=True)
class LengthParams:
    length_normalise: bool = field(
        default=True, metadata={"help": "average over tokens (true) or sum (false; favours short/long answers)"})


def _per_sample(group: Group, attr: str, params: LengthParams, sign: float) -> list[float]:
    if group.token_stats is None:
        raise ValueError("certainty rewards need token statistics from the sampler (needs={'token_stats'})")
    out = []
    for st in group.token_stats:
        x = getattr(st, attr).astype(np.float64)
        out.append(0.0 if x.size == 0 else sign * float(x.mean() if params.length_normalise else x.sum()))
    return out


@register_reward("self_certainty", params=LengthParams, needs=("token_stats",),
                 help="URLVR / Kang et al. 2025: mean over tokens of KL(Uniform || p), higher = more certain.")
def self_certainty(group: Group, params: LengthParams, ctx: RewardContext) -> RewardOutput:
    r = _per_sample(group, "self_certainty", params, 1.0)
    return RewardOutput(r, {"self_certainty": float(np.mean(r))})


@register_reward("token_entropy", params=LengthParams, needs=("token_stats",),
                 help="URLVR: minus the mean token entropy -1/T sum_t H(p_t) (entropy minimisation).")
def token_entropy(group: Group, params: LengthParams, ctx: RewardContext) -> RewardOutput:
    r = _per_sample(group, "entropy", params, -1.0)
    return RewardOutput(r, {"token_entropy": -float(np.mean(r))})


@register_reward("trajectory_logprob", params=LengthParams, needs=("token_stats",),
                 help="URLVR: the sampled response's log-probability, 1/T sum_t log p(y_t) (sequence likelihood).")
def trajectory_logprob(group: Group, params: LengthParams, ctx: RewardContext) -> RewardOutput:
    r = _per_sample(group, "logprobs", params, 1.0)
    return RewardOutput(r, {"trajectory_logprob": float(np.mean(r))})
