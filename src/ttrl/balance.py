"""Balanced advantages: the update may not move an answer's share across items (an answer prior), only which item
gets which answer (issue 16: a vote over a small answer set pushes one answer up everywhere).

Each trained sample carries features: `answer` = its answer (within its answer set); `word` = the words of its
answer (lowercase, 3+ letters, the prior monitor's rule), for free text, where the prior lives in a word ('triangle'
in 50 of 50 descriptions on tiny-omni, issue 19) rather than in one whole sentence. The step's advantages are
projected, by least squares, onto the vectors whose sum over the samples carrying any one feature is zero, so to
first order no feature gains or loses across the step, while contrasts between items (this answer is right here,
not there) are kept. With one feature per sample this is subtracting each answer's mean advantage, the
per-answer balancing of contextual-calibration / CuMa style corrections; with words it is the same for every word
at once. Samples without an answer are left as they are.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from .prior_monitor import answer_words

UNITS = ("answer", "word")


def features(set_key: Hashable, answer: str | None, unit: str = "answer") -> frozenset | None:
    """The features of one sample's answer: None for no answer, else (answer set, answer) or (answer set, word)s."""
    if answer is None:
        return None
    if unit == "answer":
        return frozenset({(set_key, answer)})
    if unit == "word":
        words = answer_words(answer)
        return frozenset((set_key, w) for w in words) if words else frozenset({(set_key, answer)})
    raise ValueError(f"balance unit must be one of {UNITS}, got {unit!r}")


def balanced(advantages: Sequence[float], feats: Sequence[frozenset | None]) -> list[float]:
    """The advantages closest (least squares) to `advantages` with a zero sum over the samples of every feature."""
    names = sorted({f for fs in feats if fs for f in fs}, key=repr)
    a = np.asarray(advantages, dtype=np.float64)
    if not names:
        return a.tolist()
    if all(fs is None or len(fs) == 1 for fs in feats):  # disjoint: the projection is each feature's mean removed
        groups: dict = {}
        for i, fs in enumerate(feats):
            if fs:
                groups.setdefault(next(iter(fs)), []).append(i)
        for idx in groups.values():
            a[idx] -= a[idx].mean()
        return a.tolist()
    col = {f: j for j, f in enumerate(names)}
    x = np.zeros((len(names), len(a)))  # feature x sample incidence
    for i, fs in enumerate(feats):
        for f in fs or ():
            x[col[f], i] = 1.0
    lam = np.linalg.lstsq(x @ x.T, x @ a, rcond=None)[0]
    return (a - x.T @ lam).tolist()
