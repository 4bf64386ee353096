"""A judge that has seen the model's own drawings (docs/meta_ttrl.md, session 17): the shipped tiny-janus' VQ and
generation stage (its generation LoRA only) are kept; the understanding encoder and aligner start fresh, and the
encoder's pre-training takes a seeded share of each batch from a pool of the shipped model's drawings of
`scenes:train` prompts (guidance 5, one image each), labelled per patch by the same blob rule as the drawings
(tiny_janus_train.patch_labels); the aligner and the yes/no stage are the shipped recipe. Writes the weights, the
assembled folder (usable as `ttrl run --introspector FOLDER/tiny-janus`) and the card's evaluation.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_janus_judge_on_drawings.py OUT [--share 0.5] [--pool 640] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ttrl.backends.t2i import JanusBackend
from ttrl.config import ModelConfig
from ttrl.seeds import derive
from ttrl.tasks.scenes import split
from ttrl.zoo import resolve_model
from ttrl.zoo.lora import LORA_PREFIX, first_rank, stack_lora
from ttrl.zoo.tiny_janus import ASSET, TRAINED_PREFIXES, assemble, build, load_weights, save_weights
from ttrl.zoo.tiny_janus_train import Budget, align_to_words, evaluate, pretrain_encoder, train_understanding


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the weights, the assembled model and card.json")
    ap.add_argument("--share", type=float, default=0.5, help="share of each encoder batch taken from the pool")
    ap.add_argument("--pool", type=int, default=640, help="drawings in the pool (scenes:train prompts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (2 when it runs alone)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0, specs = time.time(), split("train")
    policy = JanusBackend(ModelConfig(model=str(resolve_model("tiny-janus")), device="cpu", finetune="full"),
                          need_reference=False)
    pick = np.random.default_rng(derive(a.seed, "pool_prompts")).choice(len(specs), a.pool, replace=False)
    samples = policy.generate_images([specs[i].prompt() for i in pick], 1, seed=derive(a.seed, "pool_images"))
    pool = policy.decode([g[0] for g in samples])
    del policy
    print(f"pool of {len(pool)} drawings in {time.time() - t0:.0f} s", flush=True)

    tensors, arch = load_weights(ASSET)
    kept = first_rank(tensors, Budget().lora_r)  # the stacked LoRA's first rows are the generation stage's
    gen = {k: v for k, v in kept.items() if k.startswith(LORA_PREFIX)}
    model, processor = build(arch, kept)
    fresh, _ = build(arch, None, seed=a.seed)
    model.model.vision_model.load_state_dict(fresh.model.vision_model.state_dict())
    model.model.aligner.load_state_dict(fresh.model.aligner.state_dict())
    del fresh
    model.requires_grad_(False)
    budget, stats = Budget(), {}
    stats["encoder"] = pretrain_encoder(model, arch, budget, specs, a.seed, print, pool=pool, pool_share=a.share)
    stats["aligner"] = align_to_words(model, processor, arch, budget, specs, a.seed, print)
    und, stats["understanding"] = train_understanding(model, processor, arch, budget, specs, a.seed, print)
    small = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(TRAINED_PREFIXES)}
    a.out.mkdir(parents=True, exist_ok=True)
    save_weights({**small, **stack_lora(gen, und)}, arch, a.out / "weights.safetensors")
    assemble(a.out / "tiny-janus", a.out / "weights.safetensors")
    card = {"share": a.share, "pool": a.pool, "seed": a.seed, "stages": stats,
            "evaluation": evaluate(a.out / "tiny-janus", arch, budget.eval_n, a.seed),
            "seconds": round(time.time() - t0, 1)}
    (a.out / "card.json").write_text(json.dumps(card, indent=1, default=str) + "\n")
    print(json.dumps(card["evaluation"]))


if __name__ == "__main__":
    main()
