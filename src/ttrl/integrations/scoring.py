"""One ttrl reward over whole groups of texts, shared by the engine adapters (TRL, verl).

An adapter's only jobs are to find each prompt's whole group in the engine's batch and to put the
rewards back in the engine's order; what a group is scored with is the same as in ttrl's own trainer.
Only prompt text and response text are handed over: engine columns (labels included) never are.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from ..data import Query
from ..extractors import get_extractor
from ..group import Group
from ..rewards import Reward, RewardContext
from ..rewards.base import build_params


class GroupScorer:
    """Scores groups of (prompt, responses) with ttrl reward `reward` and answer type `extractor`."""

    def __init__(self, reward: str, extractor: str, params: dict | None = None, seed: int = 0, engine: str = "this engine",
                 **extractor_options):
        self.reward = Reward(reward, build_params(params))
        if self.reward.needs:
            raise ValueError(f"reward {reward!r} needs {sorted(self.reward.needs)}, which {engine} does not hand to "
                             "reward functions")
        self.extractor = get_extractor(extractor, **extractor_options)
        # one seeded generator for the run: every process that scores the same groups in the same order
        # draws the same numbers, so replicated scoring stays identical across processes
        self.ctx = RewardContext(rng=np.random.default_rng(seed))
        self.diagnostics: dict[str, list[float]] = defaultdict(list)  # per group, since the last take

    def __call__(self, query_id: str, prompt: str, responses: Sequence[str]) -> list[float]:
        group = Group.build(Query(query_id, prompt), responses, self.extractor)
        out = self.reward(group, self.ctx)
        for k, v in out.diagnostics.items():
            self.diagnostics[k].append(float(v))
        return [float(r) for r in out.rewards]

    def take_diagnostics(self) -> dict[str, float]:
        """Mean of each diagnostic over the groups scored since the last call."""
        means = {k: float(np.mean(v)) for k, v in self.diagnostics.items() if v}
        self.diagnostics.clear()
        return means
