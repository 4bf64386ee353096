"""Seconds per step of each tiny-janus build stage at the default architecture and batches, 1 thread, and of the
card's evaluation per prompt, to estimate a build's time at the most steps (docs/meta_ttrl.md). A few steps only.

    PYTHONPATH=src python scripts/tiny_janus_step_time.py [--steps 3]
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ttrl.tasks.scenes import split
from ttrl.zoo import tiny_janus_train as T
from ttrl.zoo.tiny_janus import Arch, assemble, build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--eval-n", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    arch, n = Arch(), args.steps
    budget = T.Budget(vq_steps=n, enc_steps=n, und_steps=n, gen_steps=n, eval_n=args.eval_n)
    specs = split("train")
    t = time.time()
    model, processor = build(arch, None, 0)
    model.requires_grad_(False)
    per_step = {"build": time.time() - t}
    per_step["vq"] = T.train_vq(model, arch, budget, specs, 0, None)["seconds"] / n
    gen_lora, st = T.train_generation(model, processor, arch, budget, specs, 0, None)
    per_step["generation"] = st["seconds"] / n
    per_step["encoder"] = T.pretrain_encoder(model, arch, budget, specs, 0, None)["seconds"] / n
    und_lora, st = T.train_understanding(model, processor, arch, budget, specs, 0, None)
    per_step["understanding"] = st["seconds"] / n
    small = {k: v for k, v in model.state_dict().items() if k.startswith(T.TRAINED_PREFIXES)}
    with tempfile.TemporaryDirectory() as tmp:
        weights, folder = Path(tmp) / "w.safetensors", Path(tmp) / "folder"
        T.save_weights({**small, **T.stack_lora(gen_lora, und_lora)}, arch, weights)
        t = time.time()
        assemble(folder, weights)
        per_step["assemble"] = time.time() - t
        t = time.time()
        T.evaluate(folder, arch, args.eval_n, 0)
        per_step["eval_per_prompt"] = (time.time() - t) / args.eval_n
    d = T.Budget()
    total = (per_step["vq"] * d.vq_steps + per_step["generation"] * d.gen_steps + per_step["encoder"] * d.enc_steps
             + per_step["understanding"] * d.und_steps + per_step["eval_per_prompt"] * d.eval_n)
    print(json.dumps({"seconds_per_step": per_step, "full_build_hours": total / 3600}, indent=2))


if __name__ == "__main__":
    main()
