"""Control rewards that carry no information about the answers (TTRV's random-reward ablation)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .base import Group, RewardContext, RewardOutput, register_reward


@dataclass(frozen=True)
class RandomParams:
    p: float = field(default=0.5, metadata={"help": "probability of reward 1 (TTRV ablation: random rewards hurt)"})


@register_reward("random", help="Control: r_i ~ Bernoulli(p), independent of the answers (TTRV ablation).", params=RandomParams)
def random_reward(group: Group, params: RandomParams, ctx: RewardContext) -> RewardOutput:
    return RewardOutput([float(x) for x in (ctx.rng.random(len(group)) < params.p)])
