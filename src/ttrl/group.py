"""One query's group of N samples: responses, extracted answers, their equivalence classes and the vote.

Built once per group (`Group.build`) and read by the trainer, evaluation, every reward, the judge and the
integrations, so extract -> equivalence classes -> majority is written once. A Group never holds a label.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .data import Query
from .extractors import Extractor, equivalence_classes
from .rollout import TokenStats


def majority_class(classes) -> int | None:
    """Most frequent parsed class; ties go to the class seen first (lowest id), as in TTRL."""
    counts = Counter(c for c in classes if c is not None)
    if not counts:
        return None
    best = max(counts.values())
    return min(c for c, n in counts.items() if n == best)


def majority_answer(answers: Sequence[str | None], extractor: Extractor) -> str | None:
    """The vote over answers already extracted: the first answer of the majority class, None if none parsed."""
    classes = equivalence_classes(answers, extractor)
    maj = majority_class(classes)
    return None if maj is None else answers[classes.index(maj)]


def distribution(classes) -> Counter:
    """Counts per outcome, all unparsable samples pooled into one outcome None (TTRV's form)."""
    return Counter(classes)


def entropy(counts: Counter) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values() if c)


@dataclass(frozen=True)
class VoteStats:
    """Label-free diagnostics every run logs: share of the top answer, answer entropy, parse rate."""

    majority_ratio: float
    answer_entropy: float
    unique_answers: float
    parsed: float


@dataclass(frozen=True)
class Group:
    query: Query
    responses: tuple[str, ...]
    answers: tuple[str | None, ...]  # canonical answers, None = unparsable
    classes: tuple[int | None, ...]  # equivalence class per answer, numbered in first-seen order
    # per-sample token statistics recorded while sampling; present when a reward declares needs={"token_stats"}
    token_stats: tuple[TokenStats, ...] | None = None

    @classmethod
    def build(cls, query: Query, responses: Sequence[str], extractor: Extractor,
              token_stats: Sequence[TokenStats] | None = None, answers: Sequence[str | None] | None = None) -> Group:
        """`answers`: already extracted (option-order voting maps each sample's letter back to the original order)."""
        if answers is None:
            answers = [extractor.extract(r, query.choices) for r in responses]
        return cls(query, tuple(responses), tuple(answers), tuple(equivalence_classes(answers, extractor)),
                   None if token_stats is None else tuple(token_stats))

    def __len__(self) -> int:
        return len(self.responses)

    @property
    def majority_class(self) -> int | None:
        return majority_class(self.classes)

    @property
    def majority_answer(self) -> str | None:
        """The pseudo-label: the answer of the majority class (its first member), None when nothing parsed."""
        maj = self.majority_class
        return None if maj is None else self.answers[self.classes.index(maj)]

    def vote_stats(self) -> VoteStats:
        n, maj = len(self.classes), self.majority_class
        return VoteStats(
            majority_ratio=(sum(c == maj for c in self.classes) / n) if maj is not None else 0.0,
            answer_entropy=entropy(distribution(self.classes)),
            unique_answers=float(len({c for c in self.classes if c is not None})),
            parsed=sum(c is not None for c in self.classes) / n,
        )
