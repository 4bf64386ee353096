"""Label-free guard rails: a per-group gate, a collapse monitor, early stopping and budgets.

Each returns a reason string when it fires (None otherwise), so the caller can log it and act.
"""
from __future__ import annotations

import numpy as np

from .config import SafeguardConfig
from .group import VoteStats
from .stats import StepStats


def gate_reason(vote: VoteStats, cfg: SafeguardConfig) -> str | None:
    """Why a group should not be trained on (weak consensus or nothing parsed), or None."""
    if cfg.gate_require_parsed and vote.parsed == 0:
        return "no answer parsed"
    if cfg.gate_min_majority and vote.majority_ratio < cfg.gate_min_majority:
        return f"majority ratio {vote.majority_ratio:.2f} < {cfg.gate_min_majority}"
    if cfg.gate_max_entropy and vote.answer_entropy > cfg.gate_max_entropy:
        return f"answer entropy {vote.answer_entropy:.2f} > {cfg.gate_max_entropy}"
    return None


class CollapseMonitor:
    """Watches label-free indicators every step and flags collapse (URLVR's "rise then fall"):
    answer entropy below a floor while the KL to the reference keeps rising, or mean response length
    shrinking by more than a set fraction of its warm-up baseline."""

    def __init__(self, cfg: SafeguardConfig):
        self.cfg = cfg
        self.history: list[dict[str, float]] = []

    def update(self, stats: StepStats) -> str | None:
        c = self.cfg
        self.history.append({"answer_entropy": stats.answer_entropy, "kl": stats.update.kl,
                             "response_length": stats.response_length})
        if c.monitor == "off" or len(self.history) <= c.monitor_warmup:
            return None
        base_len = np.mean([h["response_length"] for h in self.history[:c.monitor_warmup]])
        now, prev = self.history[-1], self.history[-2]
        if now["answer_entropy"] < c.entropy_floor and now["kl"] > prev["kl"]:
            return f"answer entropy {now['answer_entropy']:.3f} < {c.entropy_floor} while KL rises " \
                   f"({prev['kl']:.4f} -> {now['kl']:.4f})"
        if now["response_length"] < (1 - c.length_drop) * base_len:
            return f"response length {now['response_length']:.1f} fell below {1 - c.length_drop:.0%} of " \
                   f"the warm-up baseline {base_len:.1f}"
        return None

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])


class EarlyStopper:
    """Stops when the mean reward has not improved by `delta` for `patience` steps (label-free)."""

    def __init__(self, cfg: SafeguardConfig):
        self.patience, self.delta = cfg.early_stop_patience, cfg.early_stop_delta
        self.best, self.since = -np.inf, 0

    def update(self, reward: float) -> str | None:
        if not self.patience:
            return None
        if reward > self.best + self.delta:
            self.best, self.since = reward, 0
            return None
        self.since += 1
        if self.since >= self.patience:
            return f"mean reward has not improved by {self.delta} for {self.patience} steps (best {self.best:.3f})"
        return None

    def state_dict(self) -> dict:
        return {"best": float(self.best), "since": self.since}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.since = state["best"], state["since"]


def budget_reason(cfg: SafeguardConfig, steps: int, tokens: int, seconds: float) -> str | None:
    if cfg.max_steps and steps >= cfg.max_steps:
        return f"step budget {cfg.max_steps} reached"
    if cfg.max_tokens and tokens >= cfg.max_tokens:
        return f"token budget {cfg.max_tokens} reached ({tokens} generated)"
    if cfg.max_seconds and seconds >= cfg.max_seconds:
        return f"time budget {cfg.max_seconds:.0f} s reached"
    return None



