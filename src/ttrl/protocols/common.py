"""What every protocol shares: an adaptation step wrapped in the safeguards (collapse monitor, early
stop, budgets), logging, and checkpoints that a killed run resumes from."""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..data import Query
from ..evaluate import answer
from ..prior_monitor import AnswerPriorMonitor, monitor_key
from ..prior_probe import GreedyProbe
from ..rewards.prior import answer_set_key
from ..safeguards import CollapseMonitor, EarlyStopper, budget_reason
from ..seeds import derive
from ..stats import AdaptationState

log = logging.getLogger(__name__)


WRITTEN = "written:"


def written_key(query: Query) -> str:
    """The answer-prior monitor's key for the letters written under option orders (Trainer._written)."""
    return WRITTEN + answer_set_key(query)  # letters: always options


class Adaptation:
    def __init__(self, sess):
        self.sess, self.cfg = sess, sess.cfg.safeguards
        self.trainer = sess.trainer
        self.monitor = CollapseMonitor(self.cfg)
        self.prior = AnswerPriorMonitor(self.cfg)  # base shares set by the protocol from the base model's answers
        # a text-to-image run's answers are PNG paths: no answer prior to watch (their words are folder names)
        self.watch_prior = self.cfg.prior_monitor != "off" and not getattr(sess, "images", False)
        # greedy answers to a few adaptation items every prior_probe_every steps (prior_probe.py)
        probed = [it.query for it in sess.adapt_items[:self.cfg.prior_probe_items]] if self.watch_prior else []
        self.probe = GreedyProbe(self.cfg, probed, self._greedy)
        self.stopper = EarlyStopper(self.cfg)
        self.tokens, self.seconds = 0, 0.0
        self.stopped: str | None = None
        self.last_good, self.good_step = self.trainer.snapshot(), 0
        self.base_weights = self.last_good  # the adapter before any update (built before a resume loads its state)
        self.counts = {"gate": 0, "collapse": 0, "answer_prior": 0, "rollback": 0, "early_stop": 0, "budget": 0}

    def event(self, kind: str, reason: str, **extra: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.sess.out.append("events.jsonl", {"step": self.trainer.steps, "event": kind, "reason": reason, **extra})
        if kind != "gate":
            log.warning("%s at step %d: %s", kind, self.trainer.steps, reason)

    def _greedy(self, queries: Sequence[Query]) -> list:
        s = self.sess.cfg.sampling
        return [g.answers[0] for g in answer(self.sess.policy, self.sess.extractor, queries, self.sess.instruction,
                                             max_new_tokens=s.eval_max_new_tokens, batch_size=s.batch_size,
                                             seed=derive(self.sess.cfg.run.seed, "probe"), desc="")]

    def step(self, queries: Sequence[Query], **extra: Any) -> bool:
        """One update on these queries; False once adaptation has stopped (the step is then skipped)."""
        if self.stopped is None:
            reason = budget_reason(self.cfg, self.trainer.steps, self.tokens, self.seconds)
            if reason:
                self.stopped = reason
                self.event("budget", reason)
        if self.stopped is not None:
            return False
        self.probe.measure_base()  # once, before the first update
        result = self.trainer.step(queries)
        st = result.stats
        self.tokens += st.tokens
        self.seconds += st.seconds
        for g in result.groups:
            if g.gated:
                self.event("gate", g.gated, item=g.query_id)
        row = {**extra, **st.row(), **self.sess.label_metrics(result)}
        # collapse within groups (entropy, length) and across items (one answer for every item: the answers the
        # update pushes towards)
        # (with option orders the vote counts options, so the letters written are watched too: written_key)
        prior = self.prior.update([(monitor_key(g.group.query, g.rewarded_answer), g.rewarded_answer)
                                   for g in result.groups]
                                  + [(written_key(g.group.query), g.written) for g in result.groups if g.written]) \
            if self.watch_prior else None
        if self.watch_prior:  # what the monitor sees: the top rewarded answer's share per answer set
            row.update(self.prior.row())
        probe = None
        if self.probe.due(self.trainer.steps):  # what greedy decoding now answers on the probe items
            probe = self.probe.check()
            row.update(self.probe.row())
        fired = [(kind, why, action) for kind, why, action in (("collapse", self.monitor.update(st), self.cfg.monitor),
                                                                ("answer_prior", prior, self.cfg.prior_monitor),
                                                                ("answer_prior", probe, self.cfg.prior_monitor)) if why]
        for kind, why, action in fired:
            row[kind] = why
            self.event(kind, why, action=action)
        actions = {action for _, _, action in fired}
        if "reset" in actions:
            self.trainer.restore(self.base_weights)
            self.event("rollback", "restored the base adapter (undid every update)", to_step=0)
        elif "rollback" in actions:
            self.trainer.restore(self.last_good)
            self.event("rollback", f"restored the adapter of step {self.good_step}", to_step=self.good_step)
        if actions & {"stop", "rollback", "reset"}:
            self.stopped = fired[0][1]
        elif not fired and {self.cfg.monitor, self.cfg.prior_monitor} & {"rollback"}:
            self.last_good, self.good_step = self.trainer.snapshot(), self.trainer.steps
        early = self.stopper.update(st.reward_mean)
        if early and self.stopped is None:
            self.stopped = early
            self.event("early_stop", early)
        self.sess.out.append("metrics.jsonl", row)
        return self.stopped is None

    def reset(self) -> float:
        """Episodic reset: weights back to the base (the initial adapter), fresh optimizer and monitors.
        Returns its cost in seconds."""
        t0 = time.perf_counter()
        self.trainer.restore(self.sess.initial_weights)
        self.monitor, self.stopper = CollapseMonitor(self.cfg), EarlyStopper(self.cfg)
        self.prior = AnswerPriorMonitor(self.cfg, self.prior.base, self.prior.base_words)  # the probe's base holds
        return time.perf_counter() - t0

    def checkpoint(self, progress: dict[str, Any]) -> None:
        if self.trainer.steps % max(1, self.sess.cfg.run.checkpoint_every) and not progress.get("final"):
            return
        self.sess.out.save_checkpoint(self._state(progress))

    def _state(self, progress: dict[str, Any]) -> AdaptationState:
        return AdaptationState(self.trainer.state_dict(), progress, self.tokens, self.seconds, self.stopped,
                               dict(self.counts), self.monitor.state_dict(), self.stopper.state_dict(),
                               self.last_good, self.good_step, {**self.prior.state_dict(), "probe": self.probe.state_dict()})

    def resume(self, start: dict[str, Any]) -> dict[str, Any]:
        """Protocol progress to start from: `start` for a new run; on --resume, the checkpoint's, with
        the state restored and log rows written after it dropped (those steps are redone)."""
        if not self.sess.resume:
            return start
        state = self.sess.out.load_checkpoint() or self._state(start)
        self.trainer.load_state_dict(state.trainer)
        self.tokens, self.seconds, self.stopped = state.tokens, state.seconds, state.stopped
        self.counts = dict(state.counts)
        self.monitor.load_state_dict(state.monitor)
        self.prior.load_state_dict(state.prior)
        self.probe.load_state_dict(state.prior.get("probe"))  # older checkpoints: none (measured again)
        self.stopper.load_state_dict(state.stopper)
        self.last_good, self.good_step = state.last_good, state.good_step
        steps = self.trainer.steps
        out = self.sess.out
        out.rewrite("metrics.jsonl", [r for r in out.read("metrics.jsonl") if r["step"] <= steps])
        out.rewrite("events.jsonl", [r for r in out.read("events.jsonl") if r["step"] <= steps])
        for r in out.repairs:  # torn rows the run folder dropped before resuming
            self.event("repaired", r["reason"], file=r["file"], line=r["line"], bytes=r["bytes"])
        return state.progress

    def summary(self) -> dict[str, Any]:
        """`updates`: steps that changed the weights (a step whose groups were all gated changes nothing);
        `skipped`: the most frequent gate reason when no step did."""
        out = self.sess.out
        updates = sum(r.get("groups_trained", 0) > 0 for r in out.read("metrics.jsonl"))
        gates = Counter(e["reason"] for e in out.read("events.jsonl") if e["event"] == "gate")
        return {"stopped": self.stopped, "tokens": self.tokens, "adapt_seconds": self.seconds, "updates": updates,
                "skipped": gates.most_common(1)[0][0] if gates and not updates else None,
                **{f"events_{k}": v for k, v in self.counts.items()}}
