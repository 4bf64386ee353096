"""Test-time image shifts for image tasks (task_args `shift`, `severity`): the covariate shifts that test-time
adaptation is measured under (ImageNet-C, Hendrycks & Dietterich 2019; TENT, Wang et al. 2021), applied to the
images of a built-in task and rendered once into the cache as PNGs (queries carry image paths).

Each shift takes its own physical severity rather than ImageNet-C's 1-5 levels, so one number means the same on
any image size:
  noise       Gaussian pixel noise, sd on the [0, 1] scale (0.5: strong)
  blur        Gaussian blur radius in pixels
  contrast    contrast factor around the image mean (1: unchanged, 0.3: washed out)
  saltpepper  share of pixels set to black or white
The noise is seeded from the image's file name, so an image is shifted the same way in every run and process.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..seeds import derive


def _noise(a: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    return a + rng.normal(0.0, severity, a.shape)


def _blur(a: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageFilter

    im = Image.fromarray(_to_uint8(a)).filter(ImageFilter.GaussianBlur(severity))
    return np.asarray(im, dtype=np.float64) / 255


def _contrast(a: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    mean = a.mean(axis=(0, 1), keepdims=True)
    return (a - mean) * severity + mean


def _saltpepper(a: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(a.shape[:2])
    a = a.copy()
    a[u < severity / 2] = 0.0
    a[u > 1 - severity / 2] = 1.0
    return a


SHIFTS: dict[str, Callable] = {"noise": _noise, "blur": _blur, "contrast": _contrast, "saltpepper": _saltpepper}


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)


def shift_image(path: str, shift: str, severity: float):
    """The RGB PIL image at `path` under `shift` at `severity` (seeded by the file name)."""
    from PIL import Image

    from ..media import load_image

    a = np.asarray(load_image(path), dtype=np.float64) / 255
    rng = np.random.default_rng(derive(0, "image_shift", shift, Path(path).name))
    return Image.fromarray(_to_uint8(SHIFTS[shift](a, float(severity), rng)))


def shifted_paths(paths: Sequence[str], tag: str, shift: str, severity: float) -> list[str]:
    """Paths of the shifted copies of `paths`, rendered on first use under the cache (`tag` names the source;
    writes are atomic, so concurrent runs never read a half-written file)."""
    from ..zoo import cache_root

    out = cache_root() / "shifted" / f"{tag}-{shift}-{severity:g}"
    out.mkdir(parents=True, exist_ok=True)
    result = []
    for p in paths:
        dst = out / Path(p).name
        if not dst.exists():
            fd, tmp = tempfile.mkstemp(suffix=".png", dir=out)
            os.close(fd)
            shift_image(p, shift, severity).save(tmp, format="PNG")
            os.replace(tmp, dst)
        result.append(str(dst))
    return result
