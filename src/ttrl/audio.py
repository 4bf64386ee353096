"""Reading speech audio: any libsndfile format (wav, flac, ogg/opus, mp3) -> mono float32 at 16 kHz.

soundfile (libsndfile) decodes and soxr (libsoxr, the resampler behind sox) resamples. A missing,
empty, undecodable or silent file raises AudioError naming the file, so a caller can report the item
and skip it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000  # Whisper's input rate
SILENCE_PEAK = 1e-4  # peak |amplitude| below which a file counts as silent (-80 dBFS)


class AudioError(ValueError):
    """An audio file that cannot be used, with the path in the message."""


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from None
    audio = audio.mean(axis=1)  # downmix
    if audio.size == 0:
        raise AudioError(f"{path}: no samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: non-finite samples")
    if float(np.abs(audio).max()) < SILENCE_PEAK:
        raise AudioError(f"{path}: silent (peak below {SILENCE_PEAK})")
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)
