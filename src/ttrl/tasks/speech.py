"""Shifted English speech (`speech:test`, task_args shift=all|clean|white20|white10|babble10|fast_reverb).

The shipped set (assets/speech/, built by scripts/make_speech_data.py from a seed): sentences of a
public-domain Jules/Michel Verne story spoken by espeak-ng and flite voices, each rendering under every
shift (clean, white noise 20/10 dB SNR, 4-talker babble 10 dB, fast reverberant speech), 16 kHz Opus.
Items carry the audio path; the reference transcript is the label (evaluation only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataError, Dataset, read_jsonl
from . import register_source

ASSETS = Path(__file__).parent / "assets" / "speech"
MANIFEST = ASSETS / "manifest.jsonl"


def shifts() -> list[str]:
    """Shift names in the order the set was built."""
    names: list[str] = []
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        s = json.loads(line)["shift"]
        if s not in names:
            names.append(s)
    return names


@register_source("speech")
def load_speech(split: str, task_args: dict[str, Any], size: int, seed: int) -> Dataset:
    if split != "test":
        raise DataError(f"speech:{split}", None, None, "the shipped speech set has one split: test")
    if not MANIFEST.exists():
        raise DataError(str(MANIFEST), None, None, "missing; rebuild with scripts/make_speech_data.py")
    shift = task_args.pop("shift", "all")
    sample_seed = task_args.pop("sample_seed", seed)
    known = shifts()
    if task_args or (shift != "all" and shift not in known):
        raise DataError(f"speech:{split}", None, "task_args",
                        f"takes shift in {['all', *known]} and sample_seed; got {task_args or shift}")
    meta = {json.loads(line)["id"]: json.loads(line) for line in MANIFEST.read_text(encoding="utf-8").splitlines()}
    items = [it for it in read_jsonl(MANIFEST) if shift == "all" or meta[it.query.id]["shift"] == shift]
    if size and size < len(items):  # a seeded subset in a stable order, comparable across run seeds
        items = [items[i] for i in np.sort(np.random.default_rng(sample_seed).permutation(len(items))[:size])]
    for it in items:
        m = meta[it.query.id]
        it.meta.update({k: m[k] for k in ("shift", "snr", "voice", "rate")})
    return Dataset(f"speech:{split}:{shift}", items, answer_type="transcript")  # reference transcripts, WER
