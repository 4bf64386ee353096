"""Does a vote across label-preserving image views (test-time augmentation, as in MEMO: Zhang, Levine & Finn 2022,
with AugMix's photometric ops plus a median filter) carry more signal than the tower's greedy answer under a
test-time image shift? Greedy accuracy per view and of the plurality vote over view sets, per question type, on
the card's stratified subset (docs/results.md, session 16).

    python scripts/view_vote_probe.py --model tiny-vlm --per-type 30
"""
from __future__ import annotations

import json
from collections import Counter

from PIL import ImageEnhance, ImageFilter, ImageOps
from shift_sweep import Sweep

from ttrl.tasks.image_shift import shift_image

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
    sweep = Sweep(__doc__.splitlines()[0], per_type=30)
    for shift, severity in SHIFTS:
        preds = {}
        for name, view in VIEWS.items():
            preds[name] = sweep.answers_under(lambda p, v=view, s=shift, x=severity: v(shift_image(p, s, x)))
            print(json.dumps({"shift": shift, "severity": severity, "view": name, **sweep.score(preds[name])}),
                  flush=True)
        for combo in VOTES:
            votes = [Counter(preds[v][j] for v in combo).most_common(1)[0][0] for j in range(len(sweep.idx))]
            print(json.dumps({"shift": shift, "severity": severity, "vote": "+".join(combo), **sweep.score(votes)}),
                  flush=True)


if __name__ == "__main__":
    main()
