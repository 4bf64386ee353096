"""Reading the media files items point to, with errors that name the file (DataError)."""
from __future__ import annotations

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
