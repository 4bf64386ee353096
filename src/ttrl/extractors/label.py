"""Short-label extraction ("red", "circle", "yes") from a possibly verbose response."""
from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Extractor, register_extractor

_MARKER = re.compile(r"\banswer\s*(?:is|:|=|would be|will be)\s*:?", re.IGNORECASE)
_ARTICLES = {"a", "an", "the"}
# "The shape is a circle" -> "circle": a verbose model states the label after the last copula.
_COPULA = re.compile(r"\b(?:is|are|was|were|would be|will be|looks like|appears to be|it['\u2019]s|that['\u2019]s)\b")
# Justifications after the label are not part of it: "circle, because it is round".
_CUT = re.compile(r",|;|\s-\s|\b(?:because|since|as it|as they|which|so)\b")


def normalize(s: str) -> str:
    s = re.sub(r"['\u2019]", "", s.lower())  # "don't" -> "dont", not "don t"
    words = re.sub(r"[^\w]+", " ", s).replace("_", " ").split()
    return " ".join(w for w in words if w not in _ARTICLES)


def _first_sentence(text: str) -> str:
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(?:\d+[.)]|[-*\u2022])\s+", "", line)  # a list marker is not the label
    return re.split(r"(?<=[.!?])\s", line.strip(), maxsplit=1)[0]


@register_extractor("label", help="A short label (a word or phrase), lowercased, articles and punctuation removed.")
class LabelExtractor(Extractor):
    instruction = "Answer with a single word or short phrase."

    def __init__(self, synonyms: dict[str, str] | None = None, max_words: int = 5):
        # keys are normalised so callers may write {"Yes.": "yes"}
        self.synonyms = {normalize(k): normalize(v) for k, v in (synonyms or {}).items()}
        self.max_words = max_words

    def extract(self, response: str, choices: Sequence[str] | None = None) -> str | None:
        text = re.sub(r"\*\*|__|`", "", response or "").strip()
        marks = list(_MARKER.finditer(text))
        # the last explicit "answer is X", else the first sentence; up to any justification
        span = _first_sentence(text[marks[-1].end():] if marks else text).lower()
        yn = re.match(r"\W*(yes|no)\s*(?:[,.!;:]|$)", span)
        if yn:  # "Yes, the ball is red." answers a yes/no question ("no parking" stays a label)
            return self._canon(yn[1])
        span = _CUT.split(span, maxsplit=1)[0]
        copulas = list(_COPULA.finditer(span))
        if not marks and copulas and normalize(span[copulas[-1].end():]):
            span = span[copulas[-1].end():]
        label = normalize(span)
        if not label or len(label.split()) > self.max_words:
            return None  # no short answer found: better unparsable than a sentence that never matches a vote
        return self._canon(label)

    def _canon(self, label: str) -> str:
        return self.synonyms.get(label, label)
