"""Free text: no extraction, only normalisation, so votes count exact (normalised) repeats."""
from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Extractor, register_extractor


@register_extractor("text", help="The whole response, lowercased, whitespace collapsed, trailing punctuation removed.")
class TextExtractor(Extractor):
    instruction = ""

    def extract(self, response: str, choices: Sequence[str] | None = None) -> str | None:
        text = " ".join((response or "").split()).lower()
        text = re.sub(r"[\s.,;:!?]+$", "", text)
        return text or None
