"""easy-vqa (`easyvqa:test`, `easyvqa:train`): 64x64 shape images with colour, shape and yes/no
questions over 13 answers. A seeded sample of the split; answers are used only for evaluation.

task_args: question_type (all|color|shape|yesno), sample_seed, and a test-time image shift (`shift`: one of
image_shift.SHIFTS, `severity`: its strength), e.g. {"shift": "contrast", "severity": 0.3}."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data import DataError, Dataset, Item, Query
from . import register_source
from .image_shift import SHIFTS, shifted_paths

QUESTION_TYPES = ("all", "color", "shape", "yesno")


def question_type(question: str) -> str:
    """From the question text alone (never the answer)."""
    q = question.lower()
    if q.split()[0] in {"is", "does", "are", "do", "can"}:
        return "yesno"
    return "color" if ("color" in q or "colour" in q) else "shape"


@register_source("easyvqa")
def load_easy_vqa(split: str, task_args: dict[str, Any], size: int, seed: int) -> Dataset:
    import easy_vqa

    if split not in ("test", "train"):
        raise DataError(f"easyvqa:{split}", None, None, "split must be test or train")
    qtype = task_args.pop("question_type", "all")
    sample_seed = task_args.pop("sample_seed", seed)  # fix it to keep one evaluation subset across run seeds
    shift, severity = task_args.pop("shift", None), task_args.pop("severity", None)
    if task_args or qtype not in QUESTION_TYPES:
        raise DataError(f"easyvqa:{split}", None, "task_args", f"takes question_type in {QUESTION_TYPES}, "
                        f"sample_seed, shift and severity; got {task_args or qtype}")
    if shift is not None and (shift not in SHIFTS or not isinstance(severity, (int, float))):
        raise DataError(f"easyvqa:{split}", None, "task_args",
                        f"shift must be one of {sorted(SHIFTS)} with a numeric severity; got {shift!r}, {severity!r}")
    questions, answers, image_ids = (easy_vqa.get_test_questions() if split == "test"
                                     else easy_vqa.get_train_questions())
    paths = easy_vqa.get_test_image_paths() if split == "test" else easy_vqa.get_train_image_paths()
    keep = [i for i, q in enumerate(questions) if qtype == "all" or question_type(q) == qtype]
    # a fixed seeded sample, in a stable order, so evaluation subsets are comparable across runs
    pick = np.sort(np.random.default_rng(sample_seed).permutation(keep)[:size]) if size else np.array(keep)
    images = [paths[image_ids[i]] for i in pick]
    name = f"easyvqa:{split}:{qtype}"
    if shift is not None:
        images = shifted_paths(images, f"easyvqa-{split}", shift, severity)
        name += f":{shift}{severity:g}"
    items = [Item(Query(f"easyvqa-{split}-{i}", questions[i], images=(im,)), answers[i]) for i, im in zip(pick, images)]
    return Dataset(name, items, answer_type="label")  # one of 13 words
