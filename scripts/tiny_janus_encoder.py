"""tiny-janus' understanding encoder pre-training alone (no LM: minutes), scored where it matters: colour and shape
on the patches of held-out scenes:test drawings that have something drawn on them (~22% of patches; the white rest
inflates the build log's "patch accuracy"). docs/tiny_janus_understanding.md, session 13:

  PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_janus_encoder.py --enc-steps 600 --enc-lr 1e-4   # 67% shape
  PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_janus_encoder.py                                 # defaults: 99%
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from ttrl.scenes import PALETTE, SHAPES
from ttrl.seeds import derive
from ttrl.tasks.scenes import split
from ttrl.zoo.tiny_janus import Arch, build
from ttrl.zoo.tiny_janus_train import Budget, patch_labels, pixels, scenes


def labelled(pairs, grid: int):
    labels = [patch_labels(im, grid) for _, im in pairs]
    return (pixels([im for _, im in pairs]), torch.tensor(np.stack([c for c, _ in labels])).flatten(),
            torch.tensor(np.stack([s for _, s in labels])).flatten())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--enc-steps", type=int, default=Budget.enc_steps)
    ap.add_argument("--enc-lr", type=float, default=Budget.enc_lr)
    ap.add_argument("--enc-batch", type=int, default=Budget.enc_batch)
    ap.add_argument("--vision-width", type=int, default=Arch.vision_width)
    ap.add_argument("--vision-layers", type=int, default=Arch.vision_layers)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-n", type=int, default=200, help="scenes:test drawings scored")
    a = ap.parse_args()
    torch.set_num_threads(1)
    arch = Arch(vision_width=a.vision_width, vision_layers=a.vision_layers)
    model, _ = build(arch, None, seed=a.seed)
    model.requires_grad_(False)
    enc = model.model.vision_model.requires_grad_(True)
    # the same head, seeds and batches as pretrain_encoder, but the head is kept to score the test patches
    torch.manual_seed(derive(a.seed, "enc_head"))
    head = torch.nn.Linear(arch.vision_width, len(PALETTE) + 1 + len(SHAPES) + 1)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=a.enc_lr, weight_decay=0.0)
    specs, t0, nc = split("train"), time.time(), len(PALETTE) + 1
    for step in range(a.enc_steps):
        x, c, s = labelled(scenes(specs, a.enc_batch, derive(a.seed, "enc_batch", step), arch.image_size), arch.grid)
        out = head(enc(x).last_hidden_state).flatten(0, 1)
        loss = F.cross_entropy(out[:, :nc], c) + F.cross_entropy(out[:, nc:], s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, c, s = labelled(scenes(split("test"), a.test_n, derive(a.seed, "enc_test"), arch.image_size), arch.grid)
        out = head(enc(x).last_hidden_state).flatten(0, 1)
    pc, ps, drawn = out[:, :nc].argmax(-1), out[:, nc:].argmax(-1), c < len(PALETTE)
    print(json.dumps({**vars(a), "seconds": round(time.time() - t0, 1),
                      "drawn_patch_colour": (pc[drawn] == c[drawn]).float().mean().item(),
                      "drawn_patch_shape": (ps[drawn] == s[drawn]).float().mean().item(),
                      "all_patches_both": ((pc == c) & (ps == s)).float().mean().item(),
                      "drawn_share": drawn.float().mean().item()}))


if __name__ == "__main__":
    main()
