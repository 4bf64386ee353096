"""Typed records of a run: what one update step measured, and what a checkpoint holds.

`StepStats.row()` gives the metrics.jsonl row (the same names as before the types existed); the collapse
monitor, early stopping and budgets read the fields, not strings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UpdateStats:
    loss: float = 0.0
    kl: float = 0.0
    clip_frac: float = 0.0
    grad_norm: float = 0.0
    rollout_kl: float | None = None  # KL(sampler || policy) on sampled tokens, for engines that are not the policy
    tis_weight: float | None = None  # mean truncated importance weight, when the correction is on


@dataclass
class StepStats:
    step: int
    reward_mean: float
    update: UpdateStats
    # the vote, averaged over groups (group.py: VoteStats)
    majority_ratio: float
    answer_entropy: float
    unique_answers: float
    parsed: float
    response_length: float
    finished: float
    groups_trained: int
    groups_gated: int
    groups: int
    tokens: int
    seconds: float
    seconds_sample: float
    seconds_reward: float
    seconds_update: float
    self_certainty: float | None = None  # URLVR indicators, when the sampler recorded token statistics
    token_entropy: float | None = None
    reward_diagnostics: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The flat metrics.jsonl row: update fields inline, reward diagnostics as reward/NAME, no empty fields."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "update":
                out.update({k: x for k, x in dataclasses.asdict(v).items() if x is not None})
            elif f.name == "reward_diagnostics":
                out.update({f"reward/{k}": x for k, x in v.items()})
            elif v is not None:
                out[f.name] = v
        return out


@dataclass
class TrainerState:
    """What the trainer needs to continue exactly: weights, optimizer, step count, its RNG and reward memory."""

    weights: dict
    optimizer: dict
    steps: int
    rng: dict
    reward_state: dict


@dataclass
class AdaptationState:
    """A checkpoint (checkpoint.pt): the trainer's state plus the protocol's progress and the safeguards' state."""

    trainer: TrainerState
    progress: dict
    tokens: int
    seconds: float
    stopped: str | None
    counts: dict
    monitor: dict
    stopper: dict
    last_good: dict
    good_step: int
    prior: dict  # the answer-prior monitor (prior_monitor.py)
