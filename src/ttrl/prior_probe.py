"""Greedy probes of the answer prior: what argmax decoding does with the update, which the rewarded samples
do not show.

The answer-prior monitor (prior_monitor.py) watches the answers each step's update pushes towards. On
tiny-omni's open items (issue 19, docs/op_ttrav.md) that view stayed calm while the model collapsed: at
T 1.0 the training medoids alternated between 'triangle' and 'circle' descriptions (the shape word under
75%), yet after 8 steps the greedy descriptions said 'triangle' in 50 of 50 (base: 23). So every
`prior_probe_every` steps the probe answers a fixed set of adaptation items greedily (queries only, as the
trainer sees them) and judges those answers with the same rules, against the same items' greedy answers
before the first update. Label-free; the caller logs and acts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from .data import Query
from .prior_monitor import AnswerPriorMonitor, base_shares_from, base_word_shares_from, monitor_key

# queries -> one greedy answer (None: nothing parsed) per query, in order
Answerer = Callable[[Sequence[Query]], list]


class GreedyProbe:
    def __init__(self, params, queries: Sequence[Query], answerer: Answerer):
        """`params`: a SafeguardConfig (prior_probe_every and the prior_* thresholds)."""
        self.p, self.queries, self.answerer = params, list(queries), answerer
        self.base: list | None = None  # the probe items' greedy answers before any update
        self.last: AnswerPriorMonitor | None = None  # the latest probe's verdict, for logging

    def due(self, step: int) -> bool:
        return bool(self.p.prior_probe_every) and bool(self.queries) and step % self.p.prior_probe_every == 0

    def measure_base(self) -> None:
        """Call before the first update (a resumed run keeps the base it measured: state_dict)."""
        if self.base is None and self.p.prior_probe_every and self.queries:
            self.base = list(self.answerer(self.queries))

    def _keyed(self, answers: list) -> list[tuple[str, str | None]]:
        return [(monitor_key(q, a), a) for q, a in zip(self.queries, answers)]

    def check(self) -> str | None:
        """Answer the probe items greedily now; a reason string when their answers collapsed against the base."""
        assert self.base is not None, "measure_base() before the first update"
        base = self._keyed(self.base)
        # one window holding every probe item: the verdict is about this moment, not a running history
        params = dataclasses.replace(self.p, prior_window=max(self.p.prior_window, len(self.queries)))
        self.last = AnswerPriorMonitor(params, base_shares_from(base), base_word_shares_from(base))
        reason = self.last.update(self._keyed(list(self.answerer(self.queries))))
        return f"greedy probe of {len(self.queries)} items: {reason}" if reason else None

    def row(self) -> dict:
        """The latest probe's view for a metrics row (AnswerPriorMonitor.row under "probe/")."""
        return {} if self.last is None else self.last.row("probe")

    def state_dict(self) -> dict:
        return {"base": None if self.base is None else list(self.base)}

    def load_state_dict(self, state: dict | None) -> None:
        self.base = None if not state or state.get("base") is None else list(state["base"])
