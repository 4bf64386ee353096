"""Final-number extraction for the verbose answers of small chat models."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from .base import Extractor, register_extractor

# A number not glued to a preceding letter/digit/dot ("H2O", "x2", "v1.2" are not answers).
# Thousands groups only in threes ("1,234"; "1,2,3" stays a list); an optional "/q" makes a fraction.
# Ordinal suffixes ("3rd step") are rejected; other trailing letters ("5kg") are units and fine.
NUM = re.compile(
    r"(?<![\w.])(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<dec>\.\d+)?(?P<exp>[eE][-+]?\d+)?(?:/(?P<den>\d+)(?!\d|\.\d))?"
    r"(?!\d)(?!(?:st|nd|rd|th)\b)"
)
_MINUSES = str.maketrans({"\u2212": "-", "\ufe63": "-", "\uff0d": "-"})
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")
# "answer is", "Answer:", "answer =" (not "answer to 8 - 4 ..."), then the rest of that line.
_MARKER = re.compile(r"\banswer\s*(?:is|:|=|would be|will be)[ \t]*:?", re.IGNORECASE)
# "= 12" closing an equation: the number must not be followed by another operator ("= 12 + 5").
_EQ_OP = re.compile(r"\s*[-+*/×÷^]\s*[\d(]")
# "1. " / "2) " opening a line is a list marker, not an answer, unless nothing else is numeric.
_LIST = re.compile(r"(?m)^[ \t]*(\d+)[.)][ \t]")


def _clean(text: str) -> str:
    text = text.translate(_MINUSES)
    text = _FRAC.sub(r"\1/\2", text)  # \frac{3}{4} -> 3/4
    return re.sub(r"\*\*|__|`|\$|\\[()\[\]]", " ", text)  # markdown bold, code, LaTeX delimiters


def _numbers(text: str) -> list[tuple[re.Match, bool]]:
    """(match, negative) for each number; '-' counts as a sign only when not a binary minus ("8-4")."""
    out = []
    for m in NUM.finditer(text):
        i = m.start()
        neg = i > 0 and text[i - 1] == "-" and (i == 1 or not (text[i - 2].isalnum() or text[i - 2] in ")]}"))
        out.append((m, neg))
    return out


def canonical(m: re.Match, negative: bool) -> str | None:
    """Plain int ("007" -> "7", "7.0" -> "7"), trimmed decimal ("2.50" -> "2.5") or reduced "p/q"."""
    try:
        value = Decimal(m["int"].replace(",", "") + (m["dec"] or "") + (m["exp"] or ""))
    except InvalidOperation:
        return None
    if negative:
        value = -value
    if m["den"] and int(m["den"]) != 0:
        f = Fraction(value) / int(m["den"])
        return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _first_in(text: str) -> str | None:
    nums = _numbers(text)
    return canonical(*nums[0]) if nums else None


def to_fraction(s: str) -> Fraction | None:
    """Parse a canonical (or raw, e.g. gold "1,234" / "50%") number string exactly."""
    s = s.strip().translate(_MINUSES).rstrip("%").replace(",", "")
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def extract_number(response: str) -> str | None:
    text = _clean(response)
    # 1. the last \boxed{...} holding a number (its last number: "\boxed{x = 5}" -> 5)
    for box in reversed(_BOXED.findall(response.translate(_MINUSES))):
        nums = _numbers(_clean(box))
        if nums:
            return canonical(*nums[-1])
    # 2. the last "answer is X" whose line holds a number (first number after the marker)
    for mk in reversed(list(_MARKER.finditer(text))):
        found = _first_in(text[mk.end():].split("\n", 1)[0][:80])
        if found is not None:
            return found
    nums = _numbers(text)
    if not nums:
        return None
    # 3. the last "= N" that ends an equation
    for m, neg in reversed(nums):
        before = text[: m.start() - neg].rstrip()
        if before.endswith(("=", "≈")) and not before.endswith(("==", "<=", ">=", "!=")):
            if not _EQ_OP.match(text, m.end()):
                return canonical(m, neg)
    # 4. the last number that is not a line-start list marker, else the last number at all
    markers = {lm.start(1) for lm in _LIST.finditer(text)}
    rest = [(m, neg) for m, neg in nums if m.start() not in markers] or nums
    return canonical(*rest[-1])


@register_extractor("number", help="The final number in the response (boxed, 'answer is', '= N', else the last number).")
class NumberExtractor(Extractor):
    instruction = "Give the final answer as a single number."

    def __init__(self, rel_tol: float = 1e-6):
        self.rel_tol = rel_tol

    def extract(self, response: str, choices: Sequence[str] | None = None) -> str | None:
        return extract_number(response or "")

    def equivalent(self, a: str, b: str) -> bool:
        if a == b:
            return True
        fa, fb = to_fraction(a), to_fraction(b)
        if fa is None or fb is None:
            return a.strip() == b.strip()
        return fa == fb or math.isclose(float(fa), float(fb), rel_tol=self.rel_tol)
