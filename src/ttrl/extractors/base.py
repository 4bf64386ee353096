"""The extractor interface: a response string -> a canonical answer string, or None when unparsable.

Extraction is what a vote compares, so each extractor also owns its equivalence relation:
two answers it calls equivalent are one vote.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


class Extractor:
    """Base class. Subclasses set `name`, `instruction` and implement `extract`."""

    name: str = ""
    #: Appended to the user prompt so the model writes an answer this extractor can parse.
    instruction: str = ""

    def extract(self, response: str, choices: Sequence[str] | None = None) -> str | None:
        raise NotImplementedError

    def equivalent(self, a: str, b: str) -> bool:
        return a == b


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    factory: Callable[[], Extractor]
    help: str


EXTRACTORS: dict[str, ExtractorSpec] = {}


def register_extractor(name: str, help: str):
    def deco(cls):
        cls.name = name
        EXTRACTORS[name] = ExtractorSpec(name, cls, help)
        return cls

    return deco


def get_extractor(name: str, **options) -> Extractor:
    """Build an extractor; `options` are passed on where its constructor takes them (e.g. rel_tol for
    number, synonyms for label), so one config can carry options for every answer type."""
    import inspect

    from . import _load_all  # noqa: F401  (registers the built-in extractors)

    if name not in EXTRACTORS:
        raise ValueError(f"unknown answer type {name!r}; choose from: {', '.join(sorted(EXTRACTORS))}")
    factory = EXTRACTORS[name].factory
    accepted = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in options.items() if k in accepted})


def equivalence_classes(answers: Sequence[str | None], extractor: Extractor) -> list[int | None]:
    """Class id per answer, ids numbered in first-seen order; None stays None (never a vote).

    First-seen numbering makes ties in a vote resolve to the answer seen first (TTRL)."""
    reps: list[str] = []
    out: list[int | None] = []
    for a in answers:
        if a is None:
            out.append(None)
            continue
        for k, r in enumerate(reps):
            if a == r or extractor.equivalent(a, r):
                out.append(k)
                break
        else:
            reps.append(a)
            out.append(len(reps) - 1)
    return out
