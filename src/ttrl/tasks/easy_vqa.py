"""easy-vqa (`easyvqa:test`, `easyvqa:train`): 64x64 shape images with colour, shape and yes/no
questions over 13 answers. A seeded sample of the split; answers are used only for evaluation."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data import DataError, Dataset, Item, Query
from . import register_source

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
    if task_args or qtype not in QUESTION_TYPES:
        raise DataError(f"easyvqa:{split}", None, "task_args",
                        f"takes question_type in {QUESTION_TYPES} and sample_seed; got {task_args or qtype}")
    questions, answers, image_ids = (easy_vqa.get_test_questions() if split == "test"
                                     else easy_vqa.get_train_questions())
    paths = easy_vqa.get_test_image_paths() if split == "test" else easy_vqa.get_train_image_paths()
    keep = [i for i, q in enumerate(questions) if qtype == "all" or question_type(q) == qtype]
    # a fixed seeded sample, in a stable order, so evaluation subsets are comparable across runs
    pick = np.sort(np.random.default_rng(sample_seed).permutation(keep)[:size]) if size else np.array(keep)
    items = [Item(Query(f"easyvqa-{split}-{i}", questions[i], images=(paths[image_ids[i]],)), answers[i])
             for i in pick]
    return Dataset(f"easyvqa:{split}:{qtype}", items, answer_type="label")  # one of 13 words
