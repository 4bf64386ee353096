"""Does tiny-janus' generator read the prompt? The NLL of a drawing's image tokens under its scene's prompt with one
attribute changed (tiny_janus_train.changed: a colour or a shape to one the scene lacks, the relation reversed) minus
the NLL under the true prompt, in nats per image (36 tokens), on seeded drawings never trained on. 0 = the word is
ignored; the checker can only reward what these gaps let the sampler draw (docs/meta_ttrl.md, session 14).

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_janus_prompt_sensitivity.py                 # shipped build
    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_janus_prompt_sensitivity.py --lora-rank 16  # its generation LoRA only
    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_janus_prompt_sensitivity.py --weights W.safetensors

A built file stacks the generation LoRA (rank `lora_r`, first) and the understanding LoRA (rank `und_lora_r`) in
one set of factors (tiny_janus_train.stack_lora); `--lora-rank` keeps only the first rows, i.e. the model as the
generation stage left it, before understanding was trained.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ttrl.seeds import derive
from ttrl.tasks.scenes import split
from ttrl.zoo.lora import first_rank
from ttrl.zoo.tiny_janus import ASSET, build, load_weights
from ttrl.zoo.tiny_janus_train import changed, generation_loss, pixels, scenes, vq_forward


@torch.no_grad()
def gaps(model, processor, pairs, seed: int = 0) -> dict[str, float]:
    """Mean NLL per image under the true prompt, the unconditional one, and the gaps per changed word kind."""
    tokens = vq_forward(model.model.vqmodel, pixels([im for _, im in pairs]))[2]
    true = [s.prompt() for s, _ in pairs]

    def nll(prompts, rows, uncond=False):
        return generation_loss(model, processor, prompts, tokens[rows], [uncond] * len(rows), reduction="none").sum(1)

    rows = list(range(len(pairs)))
    base = nll(true, rows)
    out = {"nll_true": float(base.mean()), "nll_unconditional": float(nll(true, rows, uncond=True).mean())}
    rng = np.random.default_rng(seed)
    for kind in ("colour", "shape", "relation"):  # the builder's own change: to a colour / shape the scene lacks
        alt = [changed(spec, rng, kind) for spec, _ in pairs]
        keep = [i for i, a in enumerate(alt) if a]
        out[f"gap_{kind}"] = float((nll([alt[i].prompt() for i in keep], keep) - base[keep]).mean())
        out[f"n_{kind}"] = len(keep)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=ASSET, help="a built tiny-janus weights file (default: shipped)")
    ap.add_argument("--lora-rank", type=int, default=0, help="keep only the first rows of the stacked LoRA (0: all)")
    ap.add_argument("--n", type=int, default=64, help="drawings per split")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tensors, arch = load_weights(a.weights)
    if a.lora_rank:
        tensors = first_rank(tensors, a.lora_rank)
    model, processor = build(arch, tensors)
    out = {"weights": str(a.weights), "lora_rank": a.lora_rank or "all"}
    for name in ("train", "test"):  # train: prompts the generator saw, new drawings; test: prompts never seen
        pairs = scenes(split(name), a.n, derive(a.seed, "sensitivity", name), arch.image_size)
        out[name] = {k: round(v, 3) for k, v in gaps(model, processor, pairs, a.seed).items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
