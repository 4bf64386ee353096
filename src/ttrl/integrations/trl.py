"""A ttrl reward as a TRL GRPOTrainer reward function, correct with any number of processes.

    from trl import GRPOTrainer
    from ttrl.integrations.trl import trl_reward
    trainer = GRPOTrainer(model, reward_funcs=trl_reward("majority", "number"), ...)

TRL (checked on 1.16) calls reward functions in every process on that process's slice of the generation
batch. Its RepeatSampler lays each prompt's num_generations completions next to each other in the global
batch and each process takes the next contiguous slice, so one group can be split across processes (e.g.
per_device_train_batch_size 6, num_generations 4: process 0 holds 4 + 2, process 1 holds 2 + 4). A vote
over a fragment is a different vote, so this adapter gathers every process's (prompt, completion) pairs
in rank order, cuts the global batch into groups of num_generations, scores whole groups, and returns
this process's own slice. Every process scores all groups in the same order with the same seeded
generator, so all processes agree without a second exchange.

Group size comes from the trainer itself (the `log_metric` keyword TRL passes is a method of the trainer,
which knows num_generations), or from `num_generations=`. Knowing it matters: the same prompt drawn twice
in a batch makes 2 x num_generations equal consecutive prompts that are two groups, not one. Called by
hand outside TRL with no group size, consecutive equal prompts form a group.

Dataset columns (an answer column included) arrive as keyword arguments and are never read: they cannot
reach the reward.
"""
from __future__ import annotations

import json
from typing import Any

from .scoring import GroupScorer


def _text(x: Any) -> str:
    """TRL passes plain strings, or chat messages for conversational data sets."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x and isinstance(x[-1], dict):
        content = x[-1].get("content", "")
        return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
    return str(x)


def _prompt_key(x: Any) -> str:
    """The identity of a prompt, equal in every process (images and other objects count by type only:
    their repr carries a memory address)."""
    return x if isinstance(x, str) else json.dumps(x, sort_keys=True, default=lambda o: type(o).__name__)


def _all_processes(local: list) -> list[list]:
    """Every process's `local`, in rank order (torch.distributed: set up by accelerate, DeepSpeed or torchrun)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [local]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, local)
    return out


def _trainer_group_size(columns: dict) -> int | None:
    """num_generations of the GRPOTrainer that called us, in its current mode (train or eval)."""
    trainer = getattr(columns.get("log_metric"), "__self__", None)
    model = getattr(trainer, "model", None)
    if trainer is None or not hasattr(trainer, "num_generations") or model is None:
        return None
    return trainer.num_generations if model.training else getattr(trainer, "num_generations_eval", None)


def _groups(keys: list[str], size: int | None) -> list[tuple[int, int]]:
    """(start, end) of each group in the global batch."""
    if size is None:
        spans, start = [], 0
        while start < len(keys):
            end = start + 1
            while end < len(keys) and keys[end] == keys[start]:
                end += 1
            spans.append((start, end))
            start = end
        return spans
    if len(keys) % size:
        raise ValueError(f"ttrl reward: the global batch has {len(keys)} completions, not a multiple of "
                         f"num_generations={size}")
    spans = [(s, s + size) for s in range(0, len(keys), size)]
    for s, e in spans:
        if len(set(keys[s:e])) != 1:
            raise ValueError(f"ttrl reward: completions {s}..{e - 1} of the global batch belong to different prompts, "
                             f"so they are not one group of num_generations={size}; TRL's RepeatSampler keeps a "
                             "prompt's completions together, a custom sampler or data loader did not")
    return spans


def trl_reward(reward: str = "majority", extractor: str = "number", params: dict | None = None, seed: int = 0,
               num_generations: int | None = None, **extractor_options):
    """A TRL reward function computing ttrl reward `reward` over each prompt's whole group of completions.
    Rewards that need token statistics or the policy itself (self_certainty, self_judge) are not
    available here: TRL does not hand them to reward functions."""
    scorer = GroupScorer(reward, extractor, params, seed, engine="TRL", **extractor_options)

    def ttrl_reward(prompts, completions, **columns) -> list[float]:
        # `columns` holds the data set's columns and TRL's extras; only the trainer's group size is read
        size = num_generations
        found = _trainer_group_size(columns)
        if size is not None and found is not None and size != found:
            raise ValueError(f"trl_reward(num_generations={size}) but the trainer generates {found} per prompt")
        size = size or found
        if size is None and "trainer_state" in columns:
            raise ValueError("ttrl reward: cannot read num_generations from this TRL version's trainer; "
                             "pass trl_reward(..., num_generations=G) with G = GRPOConfig.num_generations")
        local = [(_prompt_key(p), _text(p), _text(c)) for p, c in zip(prompts, completions, strict=True)]
        per_rank = _all_processes(local)
        rank = _rank()
        everything = [x for part in per_rank for x in part]
        keys = [k for k, _, _ in everything]
        rewards: list[float] = []
        for s, e in _groups(keys, size):
            rewards += scorer(str(s), everything[s][1], [t for _, _, t in everything[s:e]])
        log_metric = columns.get("log_metric")
        if callable(log_metric):
            for k, v in scorer.take_diagnostics().items():
                log_metric(f"ttrl/{k}", v)
        else:
            scorer.take_diagnostics()
        start = sum(len(part) for part in per_rank[:rank])
        return rewards[start:start + len(local)]

    ttrl_reward.__name__ = f"ttrl_{reward}"
    return ttrl_reward


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
