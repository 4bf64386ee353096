"""LaTeX/math answers: extract the last \\boxed{...}; equivalence by math-verify (symbolic)."""
from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from functools import lru_cache

from .base import Extractor, register_extractor
from .number import extract_number

_MARKER = re.compile(r"\banswer\s*(?:is|:|=)\s*:?", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...}, braces balanced (nested \\frac{}{} survives)."""
    for m in reversed(list(re.finditer(r"\\(?:boxed|fbox)\s*\{", text))):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[m.end(): i - 1]
    return None


def _after_marker(text: str) -> str | None:
    """X in the last "answer is X": a $...$ / \\(...\\) span if one follows, else the rest of the line."""
    for mk in reversed(list(_MARKER.finditer(text))):
        rest = text[mk.end():].split("\n", 1)[0].strip().replace("**", "")
        m = re.match(r"\$+(.+?)\$+|\\\((.+?)\\\)", rest)
        ans = (m[1] or m[2]) if m else re.split(r"\.\s|\.$", rest, maxsplit=1)[0]
        if ans.strip():
            return ans
    return None


def _bare_math(text: str) -> str | None:
    """A response (or gold label) that is itself a short formula, e.g. "\\sqrt{2}" or "x = 2y+1" -> "2y+1".

    Without this the last-number fallback would read "\\sqrt{2}" as "2". Any English word -> not bare."""
    t = re.sub(r"^\$+|\$+$|^\\\(|\\\)$", "", text.strip()).strip()
    if not t or "\n" in t or len(t) > 80 or re.search(r"[A-Za-z]{3,}", re.sub(r"\\[A-Za-z]+", "", t)):
        return None
    return t.rsplit("=", 1)[-1].strip() or None


def _timeout() -> int | None:
    # math-verify times out with signal.alarm, which works only in the main thread.
    return 5 if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=65536)
def _parse(s: str):
    from math_verify import parse  # imported lazily: it pulls in sympy

    # \boxed{} makes math-verify read the whole string as LaTeX: bare "x+1" otherwise parses as [] or 1.
    return parse("\\boxed{" + s + "}", parsing_timeout=_timeout())


@lru_cache(maxsize=65536)
def _verify(a: str, b: str) -> bool:
    from math_verify import verify

    pa, pb = _parse(a), _parse(b)
    if not pa or not pb:
        return False
    return bool(verify(pa, pb, timeout_seconds=_timeout()))


@register_extractor("math", help="The last \\boxed{} answer (else 'answer is X', else the last number); math-verify equivalence.")
class MathExtractor(Extractor):
    instruction = "Put the final answer in \\boxed{}."

    def extract(self, response: str, choices: Sequence[str] | None = None) -> str | None:
        text = response or ""
        ans = last_boxed(text)
        if ans is None:
            ans = _after_marker(text)
        if ans is None:
            ans = _bare_math(text)
        if ans is None:
            ans = extract_number(text)
        ans = (ans or "").strip().strip("$").strip()
        return ans.rstrip(".").strip() or None

    def equivalent(self, a: str, b: str) -> bool:
        if a == b:
            return True
        try:
            return _verify(a, b)
        except Exception:  # math-verify/sympy failures (timeouts included) must not break a vote
            return a.strip() == b.strip()
