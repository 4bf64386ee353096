"""Spoken easy-vqa (`easyvqa-spoken:test`, `easyvqa-spoken:train`; task_args kind=closed|open, sample_seed):
an easy-vqa image with the question SPOKEN (the item carries both the image and the clip; its text prompt only
says to answer the spoken question), for models that hear and see (the omni backend).

The shipped set (assets/easyvqa_spoken/, built by scripts/make_spoken_vqa.py from a seed): espeak-ng voices at
several rates, 16 kHz Opus. Images are easy-vqa's own, found in the easy-vqa wheel by split and id.
* closed: an easy-vqa question; the answer is its word (13 answers), scored as easy-vqa is (label extractor);
* open: "Describe what you see." and rephrasings; the reference is a sentence from the scene's colour and shape
  ("The image shows a red circle."), compared with ROUGE-L and BLEU (answer type text); an answer counts as
  correct when it names both the colour and the shape.
Answers and references are labels: evaluation only.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataError, Dataset, Item, Query
from . import register_source

ASSETS = Path(__file__).parent / "assets" / "easyvqa_spoken"
MANIFEST = ASSETS / "manifest.jsonl"
KINDS = ("closed", "open")
SPELLINGS = {"grey": "gray"}  # British spellings an answer may use for easy-vqa's colour words


def names_scene(prediction: str | None, item: Item) -> bool:
    """An open item's answer is correct when it names the scene's colour and its shape (whole words)."""
    if not prediction:
        return False
    words = {SPELLINGS.get(w, w) for w in re.findall(r"[a-z]+", prediction.lower())}
    return item.meta["color"] in words and item.meta["shape"] in words


@register_source("easyvqa-spoken")
def load_easy_vqa_spoken(split: str, task_args: dict[str, Any], size: int, seed: int) -> Dataset:
    import easy_vqa

    if split not in ("test", "train"):
        raise DataError(f"easyvqa-spoken:{split}", None, None, "split must be test or train")
    if not MANIFEST.exists():
        raise DataError(str(MANIFEST), None, None, "missing; rebuild with scripts/make_spoken_vqa.py")
    kind = task_args.pop("kind", "closed")
    sample_seed = task_args.pop("sample_seed", seed)  # fix it to keep one evaluation subset across run seeds
    if task_args or kind not in KINDS:
        raise DataError(f"easyvqa-spoken:{split}", None, "task_args",
                        f"takes kind in {KINDS} and sample_seed; got {task_args or kind}")
    paths = easy_vqa.get_test_image_paths() if split == "test" else easy_vqa.get_train_image_paths()
    rows = [r for r in map(json.loads, MANIFEST.read_text(encoding="utf-8").splitlines())
            if r["split"] == split and r["kind"] == kind]
    if size and size < len(rows):  # a seeded subset in a stable order, comparable across run seeds
        rows = [rows[i] for i in np.sort(np.random.default_rng(sample_seed).permutation(len(rows))[:size])]
    items = []
    for r in rows:
        meta = {k: r[k] for k in ("spoken", "voice", "rate", "color", "shape") if k in r}
        query = Query(r["id"], r["prompt"], images=(paths[r["image_id"]],), audio=(str(ASSETS / r["audio"]),))
        items.append(Item(query, r["answer"], meta))
    if kind == "closed":
        return Dataset(f"easyvqa-spoken:{split}:closed", items, answer_type="label")  # one of 13 words
    return Dataset(f"easyvqa-spoken:{split}:open", items, scorer=names_scene, answer_type="text")
