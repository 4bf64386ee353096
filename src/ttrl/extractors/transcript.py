"""Speech transcripts: Whisper's English normalisation, so votes and WER ignore case, punctuation,
fillers, number spelling ("ten" = "10") and British/American spelling ("colour" = "color").

The normaliser is transformers' `EnglishTextNormalizer` (OpenAI Whisper's, as used for its reported
WERs); its spelling map (english.json, 1.7k British->American pairs) ships in the `whisper-normalizer`
wheel, since transformers only gets it from a model repo's normalizer.json.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from .base import Extractor, register_extractor


@functools.lru_cache(maxsize=1)
def english_normalizer():
    """The Whisper English normaliser with its spelling map (loaded once)."""
    import importlib.resources

    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spelling = json.loads((importlib.resources.files("whisper_normalizer") / "normalizers" / "english.json").read_text())
    return EnglishTextNormalizer(spelling)


def normalize_transcript(text: str | None) -> str:
    """Whisper English normalisation; "" for None or a transcript of only fillers/punctuation."""
    return " ".join(english_normalizer()(text or "").split())


@register_extractor("transcript", help="A speech transcript, Whisper English normalisation (case, punctuation, "
                                       "fillers, numbers, spelling); empty -> unparsable.")
class TranscriptExtractor(Extractor):
    instruction = ""  # a speech model gets no text instruction

    def extract(self, response: str, choices: Sequence[str] | None = None) -> str | None:
        return normalize_transcript(response) or None
