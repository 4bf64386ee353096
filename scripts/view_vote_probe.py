"""Does a vote across label-preserving image views (test-time augmentation, as in MEMO: Zhang, Levine & Finn 2022,
with AugMix's photometric ops plus a median filter) carry more signal than the tower's greedy answer under a
test-time image shift? Greedy accuracy per view and of the plurality vote over view sets, per question type, on
the card's stratified subset (docs/results.md, session 16).

    python scripts/view_vote_probe.py --model tiny-vlm --per-type 30
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

import torch
from PIL import ImageEnhance, ImageFilter, ImageOps

from ttrl.extractors import get_extractor
from ttrl.tasks.easy_vqa import question_type
from ttrl.tasks.image_shift import shift_image
from ttrl.zoo import tiny_vlm
from ttrl.zoo.tiny_vlm_eval import KINDS, easy_vqa_split, eval_subset, greedy_texts

VIEWS = {
    "identity": lambda im: im,
    "autocontrast": ImageOps.autocontrast,
    "equalize": ImageOps.equalize,
    "median3": lambda im: im.filter(ImageFilter.MedianFilter(3)),
    "sharpness": lambda im: ImageEnhance.Sharpness(im).enhance(2.0),
    "posterize4": lambda im: ImageOps.posterize(im, 4),
    "grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
}
VOTES = [("identity", "autocontrast", "equalize", "median3"), ("identity", "autocontrast", "equalize", "sharpness"),
         tuple(VIEWS)]  # ties go to the view listed first, the identity
SHIFTS = [("contrast", 0.3), ("saltpepper", 0.4)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-vlm", choices=sorted(tiny_vlm.TOWERS), help="registered tower")
    ap.add_argument("--per-type", type=int, default=30, help="questions of each type (the card's seeded subset)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tower = tiny_vlm.TOWERS[a.model]
    model, proc = tiny_vlm.build(tower.weights, tower=tower)
    label = get_extractor("label")
    qs, answers, _, _ = easy_vqa_split("test")
    idx = eval_subset(a.per_type)

    def score(preds: list[str | None]) -> dict[str, float]:
        hits = {k: [p == answers[i] for p, i in zip(preds, idx) if question_type(qs[i]) == k] for k in KINDS}
        return {"all": round(100 * sum(map(sum, hits.values())) / len(idx), 1),
                **{k: round(100 * sum(v) / len(v), 1) for k, v in hits.items()}}

    for shift, severity in SHIFTS:
        preds = {}
        for name, view in VIEWS.items():
            texts = greedy_texts(model, proc, idx, autocast=False,
                                 load=lambda p, v=view, s=shift, x=severity: v(shift_image(p, s, x)))
            preds[name] = [label.extract(t) for t in texts]
            print(json.dumps({"shift": shift, "severity": severity, "view": name, **score(preds[name])}), flush=True)
        for combo in VOTES:
            votes = [Counter(preds[v][j] for v in combo).most_common(1)[0][0] for j in range(len(idx))]
            print(json.dumps({"shift": shift, "severity": severity, "vote": "+".join(combo), **score(votes)}), flush=True)


if __name__ == "__main__":
    main()
