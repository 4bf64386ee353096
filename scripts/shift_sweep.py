"""Greedy accuracy of a tiny VLM on easy-vqa test under each test-time image shift (tasks/image_shift.py), per
question type, on the card's stratified subset: which shifts leave the tower room to gain.

    python scripts/shift_sweep.py --model tiny-vlm [--per-type 50]
"""
from __future__ import annotations

import argparse
import json
from functools import partial

import torch

from ttrl.extractors import get_extractor
from ttrl.media import load_image
from ttrl.tasks.easy_vqa import question_type
from ttrl.tasks.image_shift import shift_image
from ttrl.zoo import tiny_vlm
from ttrl.zoo.tiny_vlm_eval import KINDS, easy_vqa_split, eval_subset, greedy_texts

SWEEP = [("none", 0), ("noise", 0.2), ("noise", 0.35), ("noise", 0.5), ("blur", 1.5), ("blur", 2.5),
         ("contrast", 0.3), ("contrast", 0.15), ("saltpepper", 0.2), ("saltpepper", 0.4)]


class Sweep:
    """The tower, its label extractor and the card's stratified test subset, set up from the command line (shared
    with scripts/view_vote_probe.py)."""

    def __init__(self, description: str, per_type: int):
        ap = argparse.ArgumentParser(description=description)
        ap.add_argument("--model", default="tiny-vlm", choices=sorted(tiny_vlm.TOWERS), help="registered tower")
        ap.add_argument("--per-type", type=int, default=per_type, help="questions of each type (the card's seeded subset)")
        ap.add_argument("--threads", type=int, default=1, help="torch threads")
        a = ap.parse_args()
        torch.set_num_threads(a.threads)
        tower = tiny_vlm.TOWERS[a.model]
        self.model, self.proc = tiny_vlm.build(tower.weights, tower=tower)
        self.label = get_extractor("label")
        self.qs, self.answers, _, _ = easy_vqa_split("test")
        self.idx = eval_subset(a.per_type)

    def answers_under(self, load) -> list[str | None]:
        """The tower's greedy answers on the subset, each image read by `load(path)`."""
        texts = greedy_texts(self.model, self.proc, self.idx, autocast=False, load=load)
        return [self.label.extract(t) for t in texts]

    def score(self, preds: list[str | None]) -> dict[str, float]:
        """Accuracy % per question type, then over all questions."""
        hits = {k: [] for k in KINDS}
        for i, p in zip(self.idx, preds):
            hits[question_type(self.qs[i])].append(int(p == self.answers[i]))
        row = {k: round(100 * sum(v) / len(v), 1) for k, v in hits.items()}
        row["all"] = round(100 * sum(map(sum, hits.values())) / len(self.idx), 1)
        return row


def main() -> None:
    sweep = Sweep(__doc__.splitlines()[0], per_type=50)
    for shift, severity in SWEEP:
        load = load_image if shift == "none" else partial(shift_image, shift=shift, severity=severity)
        print(json.dumps({"shift": shift, "severity": severity, **sweep.score(sweep.answers_under(load))}), flush=True)


if __name__ == "__main__":
    main()
