"""tiny-janus' understanding encoder pre-training alone (no LM: minutes), scored where it matters: colour and shape
on the patches of held-out scenes:test drawings that have something drawn on them (~23% of patches; the white rest
inflates the build log's "patch accuracy"). docs/tiny_janus_understanding.md, session 13:

  PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_janus_encoder.py --enc-steps 600 --enc-lr 1e-4   # 65% shape
  PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/tiny_janus_encoder.py                                 # defaults: 99%
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ttrl.scenes import PALETTE
from ttrl.seeds import derive
from ttrl.tasks.scenes import split
from ttrl.zoo.tiny_janus import Arch, build
from ttrl.zoo.tiny_janus_train import Budget, encoder_head, patch_labels, pixels, pretrain_encoder, scenes


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
    head, t0 = encoder_head(arch, a.seed), time.time()  # kept, to score the test patches
    pretrain_encoder(model, arch, Budget(enc_steps=a.enc_steps, enc_lr=a.enc_lr, enc_batch=a.enc_batch), split("train"),
                     a.seed, None, head=head)
    pairs = scenes(split("test"), a.test_n, derive(a.seed, "enc_test"), arch.image_size)
    labels = [patch_labels(im, arch.grid) for _, im in pairs]
    c = torch.tensor(np.stack([c for c, _ in labels])).flatten()
    s = torch.tensor(np.stack([s for _, s in labels])).flatten()
    with torch.no_grad():
        out = head(model.model.vision_model(pixels([im for _, im in pairs])).last_hidden_state).flatten(0, 1)
    nc = len(PALETTE) + 1
    pc, ps, drawn = out[:, :nc].argmax(-1), out[:, nc:].argmax(-1), c < len(PALETTE)
    print(json.dumps({**vars(a), "seconds": round(time.time() - t0, 1),
                      "drawn_patch_colour": (pc[drawn] == c[drawn]).float().mean().item(),
                      "drawn_patch_shape": (ps[drawn] == s[drawn]).float().mean().item(),
                      "all_patches_both": ((pc == c) & (ps == s)).float().mean().item(),
                      "drawn_share": drawn.float().mean().item()}))


if __name__ == "__main__":
    main()
