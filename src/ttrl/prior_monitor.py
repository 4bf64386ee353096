"""Answer-prior collapse: one answer taking over ACROSS items, which no per-group indicator can see.

Each group can be confident while all groups agree on the same answer: on easy-vqa every consensus
reward drove 94-98 percent of yes/no answers to one answer, and on ARC-Easy majority vote answered every
question with the same letter where the base model gave that letter 41 percent of the time (issue 16,
docs/ttrv_ablation.md). This monitor keeps, per answer set (e.g. `rewards.prior.answer_set_key`), the
majority answers of the most recent items and reports when the most common one's share exceeds

    threshold = max(prior_max_share, base share + prior_margin)

where the base share is the same statistic for the base model: given at construction (preferred:
`base_shares_from` over the base evaluation's answers), or else measured from the answer set's first
full window, before which that answer set gets no verdict. Items whose majority answer is None
(nothing parsed) carry no answer and are skipped. Pure and label-free; the caller logs and acts.

Free answers (no options) all share one answer set, so a task that mixes yes/no questions with others
(easy-vqa: colours, shapes, yes/no) hid a collapse: every yes/no question answered 'no' was only 62% of
all answers on tiny-vlm-v1, under the threshold. `monitor_key` therefore splits free answers by their
kind (yes/no, number, other text), read off the answer itself: no label and no task name is needed.

Sentences are all different, so in the text set the same rule runs on WORDS: a word in more than the
threshold's share of the window's answers (against its share among the base answers) is a collapse of one
slot of the answer. On tiny-omni's open items an embedding reward put 'triangle' in 50 of 50 descriptions
(base: 23) while the colours still varied, which no whole-answer share shows.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Iterable

from .data import Query
from .rewards.prior import GLOBAL, answer_set_key

YES_NO = frozenset({"yes", "no", "true", "false"})
TEXT = ":text"  # suffix of the free-text answer sets, watched word by word
_WORD = re.compile(r"[a-z]{3,}")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?")


def answer_kind(answer: str) -> str:
    """yes/no, number or text: the kind of a free answer, so yes/no questions are watched apart from the rest."""
    a = answer.strip().lower().rstrip(".")
    if a in YES_NO:
        return "yes/no"
    return "number" if _NUMBER.fullmatch(a) else "text"


def monitor_key(query: Query, answer: str | None) -> str:
    """The answer set an item's answer is counted in: its options (rewards.prior.answer_set_key) or, for
    free answers, the answer's kind."""
    key = answer_set_key(query)
    return f"{key}:{answer_kind(answer)}" if key == GLOBAL and answer is not None else key


def top_share(answers: Iterable[str]) -> tuple[str | None, float, int]:
    """(most common answer, its share, number of answers); ties go to the answer seen first."""
    counts = Counter(answers)
    n = sum(counts.values())
    if not n:
        return None, 0.0, 0
    answer, k = counts.most_common(1)[0]
    return answer, k / n, n


def answer_words(answer: str) -> set[str]:
    """The words of a free-text answer that the monitor and word balancing watch: lowercase, 3+ letters."""
    return set(_WORD.findall(answer.lower()))


def word_shares(answers: list[str]) -> dict[str, float]:
    """Share of the answers that contain each word (lowercase, 3+ letters)."""
    counts = Counter(w for a in answers for w in answer_words(a))
    return {w: k / len(answers) for w, k in counts.items()} if answers else {}


def _by_key(pairs: Iterable[tuple[Hashable, str | None]]) -> dict[Hashable, list[str]]:
    by_key: dict[Hashable, list[str]] = {}
    for key, answer in pairs:
        if answer is not None:
            by_key.setdefault(key, []).append(answer)
    return by_key


def base_word_shares_from(pairs: Iterable[tuple[Hashable, str | None]]) -> dict[Hashable, dict[str, float]]:
    """Per free-text answer set, each word's share among the base answers."""
    return {k: word_shares(v) for k, v in _by_key(pairs).items() if str(k).endswith(TEXT)}


def base_shares_from(pairs: Iterable[tuple[Hashable, str | None]]) -> dict[Hashable, float]:
    """Per answer set, the top answer's share among base answers (e.g. the base model's greedy answers)."""
    return {k: top_share(v)[1] for k, v in _by_key(pairs).items()}


class AnswerPriorMonitor:
    def __init__(self, params, base_shares: dict[Hashable, float] | None = None,
                 base_words: dict[Hashable, dict[str, float]] | None = None):
        """`params`: a SafeguardConfig (its prior_* fields)."""
        self.p = params
        self.base: dict[Hashable, float] = dict(base_shares or {})
        self.base_words: dict[Hashable, dict[str, float]] = dict(base_words or {})
        self.windows: dict[Hashable, list[str]] = {}
        self.seen: dict[Hashable, int] = {}  # items counted per answer set, for measuring the base

    def threshold(self, key: Hashable) -> float | None:
        return None if key not in self.base else max(self.p.prior_max_share, self.base[key] + self.p.prior_margin)

    def update(self, majority_answers: list[tuple[Hashable, str | None]]) -> str | None:
        """Add one step's (answer-set key, majority answer) pairs; a reason string when an answer set collapsed."""
        w = self.p.prior_window
        if not w:
            return None
        touched = []
        for key, answer in majority_answers:
            if answer is None:
                continue
            win = self.windows.setdefault(key, [])
            win.append(answer)
            del win[:-w]
            self.seen[key] = self.seen.get(key, 0) + 1
            if key not in self.base and self.seen[key] == w:  # no base given: the first full window is the base
                self.base[key] = top_share(win)[1]
            if str(key).endswith(TEXT) and key not in self.base_words and self.seen[key] == w:
                self.base_words[key] = word_shares(win)
            if key not in touched:
                touched.append(key)
        reasons = []
        for key in touched:
            answer, share, n = top_share(self.windows[key])
            thr = self.threshold(key)
            if thr is not None and n >= self.p.prior_min_items and share > thr:
                reasons.append(f"answer-prior collapse: {answer!r} is the majority answer of {share:.0%} of the last {n} "
                               f"items with answer set {key!r} (base {self.base[key]:.0%}, threshold {thr:.0%})")
            elif key in self.base_words and n >= self.p.prior_min_items:
                word = self._word_collapse(key)
                if word:
                    reasons.append(word)
        return "; ".join(reasons) or None

    def _top_word(self, key: Hashable, verdict: bool = False) -> tuple[float, str, float] | None:
        """(excess, word, share) of the window's word furthest above its base share, or, for a verdict, above its
        threshold max(prior_max_share, base share + prior_margin); None without words."""
        base = self.base_words.get(key, {})
        floor, margin = (self.p.prior_max_share, self.p.prior_margin) if verdict else (0.0, 0.0)
        shares = word_shares(self.windows[key])
        return max(((sh - max(floor, base.get(w, 0.0) + margin), w, sh) for w, sh in shares.items()), default=None)

    def _word_collapse(self, key: Hashable) -> str | None:
        """The word furthest over its threshold in this text set's window, as a reason; None if none is over."""
        top = self._top_word(key, verdict=True)
        if top is None or top[0] <= 0:
            return None
        _, w, share = top
        return (f"answer-prior collapse: the word {w!r} is in {share:.0%} of the last {len(self.windows[key])} answers "
                f"with answer set {key!r} (base {self.base_words[key].get(w, 0.0):.0%})")

    def top_words(self) -> dict[Hashable, tuple[str, float]]:
        """Per free-text answer set: the word furthest above its base share in the window, and its share."""
        tops = {k: self._top_word(k) for k in self.windows if str(k).endswith(TEXT)}
        return {k: (t[1], t[2]) for k, t in tops.items() if t is not None}

    def row(self, prefix: str = "prior") -> dict:
        """The monitor's view for a metrics row: per answer set the top answer, its share and items, and for free
        text the word furthest above its base share, with its share."""
        row = {}
        for key, (top, share, n) in self.shares().items():
            row[f"{prefix}/{key}/top"], row[f"{prefix}/{key}/share"], row[f"{prefix}/{key}/items"] = top, share, n
        for key, (word, share) in self.top_words().items():
            row[f"{prefix}/{key}/top_word"], row[f"{prefix}/{key}/top_word_share"] = word, share
        return row

    def shares(self) -> dict[Hashable, tuple[str | None, float, int]]:
        """Per answer set: (top majority answer, its share, items) over the current window, for logging."""
        return {k: top_share(v) for k, v in self.windows.items()}

    def state_dict(self) -> dict:
        return {"base": dict(self.base), "windows": {k: list(v) for k, v in self.windows.items()}, "seen": dict(self.seen),
                "base_words": {k: dict(v) for k, v in self.base_words.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.base = dict(state["base"])
        self.windows = {k: list(v) for k, v in state["windows"].items()}
        self.seen = dict(state["seen"])
        self.base_words = {k: dict(v) for k, v in state.get("base_words", {}).items()}  # older checkpoints: none
