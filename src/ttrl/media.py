"""Reading the media files items point to, with errors that name the file (DataError): images (PIL) and speech
audio (any libsndfile format: wav, flac, ogg/opus, mp3; soundfile decodes, soxr resamples to mono float32 at
16 kHz; a missing, empty, undecodable or silent file is an AudioError)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import DataError


def load_image(path: str):
    """An RGB PIL image, or a DataError naming the file (missing, unreadable, not an image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(path, None, "image", "no such image file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(path, None, "image", f"cannot read the image ({e})") from None


SAMPLE_RATE = 16000  # Whisper's input rate
SILENCE_RMS = 1e-4  # RMS amplitude below which a file counts as silent (-80 dBFS; speech is -40 to -15 dBFS)


class AudioError(DataError):
    """An audio file that cannot be used, naming the file (a DataError, so callers report the item and skip it)."""

    def __init__(self, path, message: str):
        super().__init__(str(path), None, "audio", message)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(path, f"cannot decode audio ({e})") from None
    audio = audio.mean(axis=1)  # downmix
    if audio.size == 0:
        raise AudioError(path, "no samples")
    if not np.isfinite(audio).all():
        raise AudioError(path, "non-finite samples")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < SILENCE_RMS:  # all zeros, or near-zero hiss: nothing to transcribe
        raise AudioError(path, f"silent (RMS {rms:.1e} below {SILENCE_RMS}, -80 dBFS)")
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)
