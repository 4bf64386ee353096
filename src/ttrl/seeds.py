"""Every seed of a run, derived from the run seed in one place.

`derive(run_seed, "rollout", step)` gives an independent 63-bit seed per purpose and index (numpy's
SeedSequence mixes the words; purposes are hashed with crc32, which is stable across processes, unlike
Python's `hash`). Same run seed, same seeds, whatever the process, and no two purposes collide the way
`seed + 7` and `seed + 1` offsets can.
"""
from __future__ import annotations

import zlib

import numpy as np


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
