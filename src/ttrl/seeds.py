"""Every seed of a run, derived from the run seed in one place.

`derive(run_seed, "rollout", step)` gives an independent 63-bit seed per purpose and index (numpy's
SeedSequence mixes the words; purposes are hashed with crc32, which is stable across processes, unlike
Python's `hash`). Same run seed, same seeds, whatever the process, and no two purposes collide the way
`seed + 7` and `seed + 1` offsets can.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import torch


def _word(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    if part < 0:
        raise ValueError(f"seed parts must be >= 0, got {part}")
    return int(part)


def derive(run_seed: int, *path: int | str) -> int:
    """A seed in [0, 2**63) for `path` (a purpose name and indices) of the run seeded `run_seed`."""
    words = [_word(run_seed), *(_word(p) for p in path)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def use_deterministic_kernels(on: bool = True) -> None:
    """torch's deterministic kernels, process-wide. Without them two runs of the default command from the same
    seed on 2 CPU threads gave 69% and 62%: a parallel CPU kernel sums in thread order, the KL drifted by 1e-7
    at step 4 of a small run and a gate decision flipped later. With them, runs repeat bit for bit and equal the
    one-thread numbers, at no measured cost (125 s either way; docs/results.md). warn_only: on a GPU an op
    without a deterministic kernel warns instead of failing the run."""
    if on and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it when its handle is made
    torch.use_deterministic_algorithms(on, warn_only=True)
