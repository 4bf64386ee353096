"""A ttrl reward as a TRL GRPOTrainer reward function.

    from trl import GRPOTrainer
    from ttrl.integrations.trl import trl_reward
    trainer = GRPOTrainer(model, reward_funcs=trl_reward("majority", "number"), ...)

TRL calls a reward function on a flat batch in which each prompt's num_generations completions sit
next to each other; ttrl rewards score whole groups. The adapter regroups consecutive completions of one
prompt, extracts answers, and calls the ttrl reward per group. Dataset columns arrive as keyword
arguments and are ignored: a label column in the data set never reaches the reward.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data import Query
from ..extractors import get_extractor
from ..group import Group
from ..rewards import Reward, RewardContext


def _text(x: Any) -> str:
    """TRL passes plain strings, or chat messages for conversational data sets."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x and isinstance(x[-1], dict):
        content = x[-1].get("content", "")
        return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
    return str(x)


def trl_reward(reward: str = "majority", extractor: str = "number", params: dict | None = None, seed: int = 0,
               **extractor_options):
    """A TRL reward function computing ttrl reward `reward` over each prompt's group of completions.
    Rewards that need token statistics or the policy itself (self_certainty, self_judge) are not
    available here: TRL does not hand them to reward functions."""
    fn = Reward(reward, params)
    if fn.needs:
        raise ValueError(f"reward {reward!r} needs {sorted(fn.needs)}, which TRL reward functions do not receive")
    ext = get_extractor(extractor, **extractor_options)
    ctx = RewardContext(rng=np.random.default_rng(seed))

    def ttrl_reward(prompts, completions, **_columns) -> list[float]:
        prompts, texts = [_text(p) for p in prompts], [_text(c) for c in completions]
        out: list[float] = []
        start = 0
        while start < len(texts):
            end = start + 1
            while end < len(texts) and prompts[end] == prompts[start]:
                end += 1
            group = Group.build(Query(str(start), prompts[start]), texts[start:end], ext)
            out += [float(r) for r in fn(group, ctx).rewards]
            start = end
        return out

    ttrl_reward.__name__ = f"ttrl_{reward}"
    return ttrl_reward
