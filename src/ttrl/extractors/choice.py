"""Multiple-choice letter extraction (options shown to the model as "A. text", "B. text", ...)."""
from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Extractor, register_extractor

# Words that may follow an answer letter. Any other lowercase word means the letter was the article
# "A" (or a pronoun "I") in running text: "The answer is A dog" is not option A.
_CONNECTIVES = {"because", "since", "as", "is", "was", "which", "and", "for", "with", "so", "would", "should"}
_END = r"(?=[\s.,;:)\]!*]|$)"


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", s.lower()).split())


def _letter_ok(text: str, m: re.Match) -> bool:
    nxt = re.match(r"[ \t]+([a-z]+)", text[m.end(1):])
    return nxt is None or nxt[1] in _CONNECTIVES


def _last(pattern: str, text: str) -> str | None:
    # lower case only in brackets: "answer is (b)" is a letter, "answer is a" is an article
    hits = [m for m in re.finditer(pattern, text, re.IGNORECASE | re.MULTILINE)
            if (m[1].isupper() or text[m.start(1) - 1] in "([") and _letter_ok(text, m)]
    return hits[-1][1].upper() if hits else None


def extract_choice(response: str, choices: Sequence[str] | None) -> str | None:
    n = min(len(choices), 26) if choices else 5
    L = "[" + "".join(chr(65 + i) for i in range(n)) + "]"  # upper-case only: patterns run re.I, checked after
    raw = (response or "").strip()
    if not raw:
        return None
    # A bare letter as the whole answer or its first line; lower case is fine here ("b." -> B).
    m = re.fullmatch(r"[\s(\[*]*([a-zA-Z])[\s).\]:*]*", raw.splitlines()[0])
    if m:
        return m[1].upper() if m[1].upper() in L else None
    bold = re.findall(rf"\*\*\s*[(\[]?({L})(?:[.):\]]|\s*\*\*)", raw)
    text = re.sub(r"\*\*|__|\$|`", "", raw)
    # Explicit patterns, last occurrence wins (a model that corrects itself ends with its answer).
    for pat in (
        rf"\banswer(?:\s+(?:is|would be|should be|will be))?\s*[:=]?\s*(?:option\s+|choice\s+)?[(\[]?({L}){_END}",
        rf"\b(?:option|choice|pick|choose|select|go with)\s*[(\[]?({L}){_END}",
        rf"\b({L})\)?\s+is\s+(?:the\s+)?(?:correct|right|best)\b",
    ):
        found = _last(pat, text)
        if found:
            return found
    # Weak patterns: "(B)", "B." / "B)" opening a line, "**B**". Used only when they agree on one letter,
    # since a model restating the options would otherwise pick the first or last option.
    weak = set(bold)
    weak |= set(re.findall(rf"[(\[]({L})[)\]]", text))
    weak |= set(re.findall(rf"(?m)^\s*({L})[.):](?:\s|$)", text))
    if len(weak) == 1:
        return weak.pop()
    if weak or not choices:
        return None
    # No letter: the one option whose text the response contains (as whole words). An option contained
    # in a longer matching option ("red" in "dark red") is explained by the longer one and dropped.
    resp = f" {_norm(text)} "
    hits = {i: _norm(c) for i, c in enumerate(choices[:n]) if _norm(c) and f" {_norm(c)} " in resp}
    hits = {i: c for i, c in hits.items() if not any(c != o and f" {c} " in f" {o} " for o in hits.values())}
    return chr(65 + next(iter(hits))) if len(hits) == 1 else None


@register_extractor("choice", help="The letter of a multiple-choice option (A, B, ...), or the option whose text is quoted.")
class ChoiceExtractor(Extractor):
    instruction = "Answer with the letter of the correct option."

    def extract(self, response: str, choices: Sequence[str] | None = None) -> str | None:
        return extract_choice(response, choices)

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip().upper() == b.strip().upper()
