"""Text-to-image prompts over procedural scenes (`scenes:test`, `scenes:train`), e.g. "a blue circle above a red
square". Every scene the generator knows (ttrl/scenes.py, 1431 of them) is split once by a fixed seed into a
held-out test split and a train split (for building a model, e.g. tiny-janus), so no test prompt is trained on.

The structured spec of each prompt goes only into `Item.meta["spec"]`, read by the pixel checker at evaluation:
like a label, it never reaches a reward or an update (the trainer and rewards see `Query`, which has no such field).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data import DataError, Dataset, Item, Query
from ..scenes import all_specs
from . import register_source

SPLIT_SEED = 17  # fixed: the test/train split never changes with run or data seeds
TEST_SIZE = 300  # scenes held out for evaluation (about a fifth)


def split(name: str) -> list:
    """The specs of a split, in a stable order."""
    specs = all_specs()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(specs))
    pick = order[:TEST_SIZE] if name == "test" else order[TEST_SIZE:]
    return [specs[i] for i in sorted(pick)]


@register_source("scenes")
def load_scenes(name: str, task_args: dict[str, Any], size: int, seed: int) -> Dataset:
    if name not in ("test", "train"):
        raise DataError(f"scenes:{name}", None, None, "split must be test or train")
    sample_seed = task_args.pop("sample_seed", seed)  # fix it to keep one prompt subset across run seeds
    if task_args:
        raise DataError(f"scenes:{name}", None, "task_args", f"takes only sample_seed; got {task_args}")
    specs = split(name)
    pick = np.sort(np.random.default_rng(sample_seed).permutation(len(specs))[:size]) if size else range(len(specs))
    items = [Item(Query(f"scenes-{name}-{i}", specs[i].prompt()), meta={"spec": specs[i].to_dict()}) for i in pick]
    return Dataset(f"scenes:{name}", items)
