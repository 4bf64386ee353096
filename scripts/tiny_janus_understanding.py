"""tiny-janus' understanding stage alone, for experiments in minutes (docs/tiny_janus_understanding.md): SmolLM2 in
the Janus model as `build` makes it (no VQ / generation stage: neither touches what understanding trains except
the generation LoRA merged into the LM), the encoder pre-trained once and cached, then `train_understanding` with
the given budget. Prints the probe curve and the accuracy on held-out scenes:test questions, both as the card asks
them (questions_for) and as minimal pairs (paired_questions: the question text alone scores 50% there).

  PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_janus_understanding.py --und-steps 100 [--no-pairs] ...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from ttrl.backends.t2i import NO_WORDS, YES_WORDS
from ttrl.seeds import derive
from ttrl.tasks.scenes import split
from ttrl.zoo.tiny_janus import Arch, build
from ttrl.zoo.tiny_janus_train import (
    Budget,
    align_to_words,
    paired_questions,
    pretrain_encoder,
    questions_for,
    scenes,
    train_understanding,
    yes_no_logits,
)


def accuracy(model, processor, triples, batch: int = 16) -> float:
    tok = processor.tokenizer
    spell = [sorted({i[0] for w in words for i in [tok.encode(w, add_special_tokens=False)] if len(i) == 1})
             for words in (NO_WORDS, YES_WORDS)]
    hits = []
    with torch.no_grad():
        for i in range(0, len(triples), batch):
            lg = yes_no_logits(model, processor, triples[i:i + batch])
            odds = lg[:, spell[1]].logsumexp(-1) - lg[:, spell[0]].logsumexp(-1)
            hits += [(o > 0).item() == a for o, (_, _, a) in zip(odds, triples[i:i + batch])]
    return float(np.mean(hits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Budget):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            ap.add_argument(flag, type=type(f.default), default=f.default)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-n", type=int, default=100, help="scenes:test drawings asked (x2 questions)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/tiny_janus_encoder"), help="pre-trained encoder cache")
    ap.add_argument("--out", type=Path, help="append the result as a JSON line here")
    ns = vars(ap.parse_args())
    seed, test_n, cache, out = ns.pop("seed"), ns.pop("test_n"), ns.pop("cache"), ns.pop("out")
    budget = Budget(**ns)
    torch.set_num_threads(1)
    arch = Arch()
    model, processor = build(arch, None, seed=seed)
    model.requires_grad_(False)
    specs = split("train")
    path = cache / f"enc_s{seed}_{budget.enc_steps}x{budget.enc_batch}_lr{budget.enc_lr}.pt"  # pretrain_encoder's
    if path.exists():
        model.load_state_dict(torch.load(path), strict=False)
    else:
        pretrain_encoder(model, arch, budget, specs, seed, print)
        cache.mkdir(parents=True, exist_ok=True)
        torch.save({k: v for k, v in model.state_dict().items() if k.startswith("model.vision_model.")}, path)
    t0 = time.time()
    align = align_to_words(model, processor, arch, budget, specs, seed, print)
    _, stats = train_understanding(model, processor, arch, budget, specs, seed, print)
    test = scenes(split("test"), test_n, derive(seed, "eval_scenes"), arch.image_size)
    row = {"budget": {k: v for k, v in dataclasses.asdict(budget).items() if k.startswith("und")}, **stats, "aligner": align,
           "test_card": accuracy(model, processor, questions_for(test + test, derive(seed, "eval_questions"))),
           "test_pairs": accuracy(model, processor, paired_questions(test, derive(seed, "eval_pairs"), arch.image_size)),
           "wall_seconds": time.time() - t0}
    print(json.dumps(row))
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
