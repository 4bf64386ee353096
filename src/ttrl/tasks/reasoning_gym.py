"""Procedural tasks from reasoning-gym (`rg:NAME`), scored by reasoning-gym's own scorers."""
from __future__ import annotations

from typing import Any

from ..data import DataError, Dataset, Item, Query
from . import register_source

# Tasks whose answers are one number, read from the task definitions (not from any item's label); any other
# task needs --answer-type.
NUMERIC_TASKS = {"basic_arithmetic", "chain_sum", "decimal_arithmetic", "simple_equations", "leg_counting",
                 "gsm_symbolic", "products"}


@register_source("rg")
def load_rg(name: str, task_args: dict[str, Any], size: int, seed: int) -> Dataset:
    import reasoning_gym

    # YAML/CLI give lists; reasoning-gym configs expect tuples for options like `operators`.
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in task_args.items()}
    try:
        ds = reasoning_gym.create_dataset(name, size=size, seed=seed, **args)
    except Exception as e:  # reasoning-gym raises several types for bad names/args
        raise DataError(f"rg:{name}", None, "task_args", f"reasoning-gym could not build the task: {e}") from e
    entries = list(ds)
    items = [
        Item(Query(f"{name}-{seed}-{i}", e["question"]), str(e["answer"]), meta={"entry": e})
        for i, e in enumerate(entries)
    ]

    def score(pred: str | None, item: Item) -> bool:
        return pred is not None and ds.score_answer(pred, item.meta["entry"]) >= 1.0

    return Dataset(f"rg:{name}", items, scorer=score, answer_type="number" if name in NUMERIC_TASKS else None)
