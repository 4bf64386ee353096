"""Data sources: a JSONL file, or a built-in task named `prefix:name` (e.g. `rg:basic_arithmetic`).

Sources register a prefix here; nothing else in the package knows data-source names.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data import DataError, Dataset, read_jsonl

# prefix -> loader(name, task_args, size, seed) -> Dataset
SOURCES: dict[str, Callable[[str, dict[str, Any], int, int], Dataset]] = {}


def register_source(prefix: str):
    def deco(fn):
        SOURCES[prefix] = fn
        return fn

    return deco


def load_dataset(spec: str, task_args: dict[str, Any] | None = None, size: int = 200, seed: int = 0) -> Dataset:
    from . import easy_vqa, easy_vqa_spoken, olmo_eval, reasoning_gym, scenes, speech  # noqa: F401  (register "easyvqa",
    # "easyvqa-spoken", "bench", "rg", "scenes", "speech")

    prefix, sep, name = spec.partition(":")
    if sep and prefix in SOURCES:
        return SOURCES[prefix](name, dict(task_args or {}), size, seed)
    path = Path(spec)
    if path.suffix in {".jsonl", ".json"} or path.exists():
        return Dataset(path.stem, read_jsonl(path))
    known = ", ".join(f"{p}:NAME" for p in sorted(SOURCES))
    raise DataError(spec, None, None, f"not a file and not a built-in task (built-ins: {known})")
