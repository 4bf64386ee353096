"""Does a tiny VLM answer easy-vqa's yes/no questions from the image, or from the wording?

easy-vqa's yes/no answers are skewed by wording: a plain question ("is there a red shape?") is mostly 'no' (one
shape, eight colours), a negated one ("is there not a red shape?") mostly 'yes'. This script splits a fixed sample
of test yes/no questions into those whose answer agrees with that wording rule and those against it, and reports
the model's greedy accuracy on each, beside the rule's own accuracy. A model that reads the image scores on both;
one that reads the wording scores near 100% with the rule and near 0% against it.

    python scripts/yesno_wording.py --model tiny-vlm [--weights PATH] [--n 240]
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from ttrl.extractors import get_extractor
from ttrl.tasks.easy_vqa import question_type
from ttrl.zoo import tiny_vlm
from ttrl.zoo.tiny_vlm_eval import easy_vqa_split, greedy_texts
from ttrl.zoo.tiny_vlm_train import yesno_bucket


def wording_rule(question: str) -> str:
    """The answer read off the wording alone: negated -> 'yes', plain -> 'no'."""
    negated, _, _ = yesno_bucket(question, "")
    return "yes" if negated else "no"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-vlm", choices=sorted(tiny_vlm.TOWERS), help="registered tower")
    ap.add_argument("--weights", type=Path, default=None, help="weights file (default: the tower's shipped asset)")
    ap.add_argument("--n", type=int, default=240, help="test yes/no questions (a seeded sample)")
    ap.add_argument("--seed", type=int, default=0, help="sample seed")
    a = ap.parse_args()
    torch.set_num_threads(1)
    tower = tiny_vlm.TOWERS[a.model]
    model, proc = tiny_vlm.build(a.weights or tower.weights, tower=tower)
    label = get_extractor("label")
    qs, answers, _, _ = easy_vqa_split("test")
    yn = [i for i in range(len(qs)) if question_type(qs[i]) == "yesno"]
    random.Random(a.seed).shuffle(yn)
    yn = yn[:a.n]
    hits = {"with the wording": [], "against the wording": []}
    for i, text in zip(yn, greedy_texts(model, proc, yn, batch_size=40, autocast=False)):
        key = "with the wording" if wording_rule(qs[i]) == answers[i] else "against the wording"
        hits[key].append(int(label.extract(text) == answers[i]))
    n = sum(len(v) for v in hits.values())
    report = {"model": a.model, "weights": str(a.weights or tower.weights), "n": n,
              "wording_rule_accuracy": round(len(hits["with the wording"]) / n, 4),
              "model_accuracy": round(sum(sum(v) for v in hits.values()) / n, 4),
              **{f"model_accuracy {k} ({len(v)})": round(sum(v) / max(1, len(v)), 4) for k, v in hits.items()}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
