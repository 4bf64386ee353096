"""Agreement rewards over the answers of one group: TTRL majority vote, TTRV frequency and entropy.

Unparsable answers (class None) never win a vote and get no frequency credit. In the reward
distributions each unparsable sample is an outcome of its own: two failures to answer do not agree.
(TTRV's public code pools empty answers into one answer ""; a large pool of them then looks like
consensus and the leave-one-out entropy term scores unparsable samples above parsed ones.)
The logged `answer_entropy` diagnostic keeps TTRV's pooled form, where all-unparsable groups read as 0.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from ..group import entropy
from .base import Group, RewardContext, RewardOutput, register_reward


def reward_distribution(classes) -> Counter:
    """Counts per outcome for the agreement rewards: each unparsable sample is its own outcome, so
    failures never add up to a consensus (an unparsable sample never out-scores a parsed one)."""
    counts = Counter(c for c in classes if c is not None)
    counts.update(("unparsed", i) for i, c in enumerate(classes) if c is None)
    return counts


def _outcomes(classes) -> list:
    return [("unparsed", i) if c is None else c for i, c in enumerate(classes)]


@register_reward("majority", help="TTRL (Zuo et al. 2025): 1 if the answer equals the group's majority answer, else 0.")
def majority(group: Group, params, ctx: RewardContext) -> RewardOutput:
    maj = group.majority_class
    rewards = [float(maj is not None and c == maj) for c in group.classes]
    return RewardOutput(rewards)


def _frequencies(classes) -> list[float]:
    counts, n = reward_distribution(classes), len(classes)
    return [0.0 if c is None else counts[c] / n for c in classes]


@register_reward("frequency", help="TTRV (Singh et al. 2026) soft vote: r_i = p(a_i), the share of the group giving a_i.")
def frequency(group: Group, params, ctx: RewardContext) -> RewardOutput:
    return RewardOutput(_frequencies(group.classes))


def _norm(counts: Counter) -> float:
    m = len(counts)
    return math.log(m) if m > 1 else 1.0


def loo_entropy_terms(classes) -> list[float]:
    """Per-sample diversity term -(H(P) - H(P_-i)) / log M: positive for samples whose removal would
    raise the entropy (members of large buckets), so it survives group normalisation. Unparsable
    samples are singletons (reward_distribution), so their term is the lowest in the group."""
    counts = reward_distribution(classes)
    h, z = entropy(counts), _norm(counts)
    out = []
    for c in _outcomes(classes):
        rest = counts.copy()
        rest[c] -= 1
        out.append((entropy(rest) - h) / z)
    return out


@register_reward(
    "entropy",
    help="TENT-style entropy minimisation as a per-sample reward: -(H(P) - H(P without i)) / log M.",
)
def entropy_only(group: Group, params, ctx: RewardContext) -> RewardOutput:
    return RewardOutput(loo_entropy_terms(group.classes))


@dataclass(frozen=True)
class TTRVParams:
    alpha: float = field(default=0.75, metadata={"help": "weight of the entropy term (TTRV public code: 0.75)"})
    form: str = field(
        default="per_sample",
        metadata={
            "help": "per_sample: leave-one-out entropy change (survives group normalisation); "
            "paper: -H(P)/log M, the same for every sample (cancels under GRPO)",
            "choices": ("per_sample", "paper"),
        },
    )


@register_reward(
    "ttrv",
    help="TTRV (Singh et al. 2026): frequency + alpha x diversity control (entropy of the answer distribution).",
    params=TTRVParams,
    group_constant=lambda p: p.form == "paper",
)
def ttrv(group: Group, params: TTRVParams, ctx: RewardContext) -> RewardOutput:
    r1 = _frequencies(group.classes)
    if params.form == "paper":
        counts = reward_distribution(group.classes)
        r2 = [-entropy(counts) / _norm(counts)] * len(group)
    elif params.form == "per_sample":
        r2 = loo_entropy_terms(group.classes)
    else:
        raise ValueError(f"ttrv form must be 'per_sample' or 'paper', got {params.form!r}")
    rewards = [a + params.alpha * b for a, b in zip(r1, r2)]
    return RewardOutput(rewards, {"frequency": sum(r1) / len(r1), "entropy_term": sum(r2) / len(r2)})
