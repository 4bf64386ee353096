"""What every protocol shares: an adaptation step wrapped in the safeguards (collapse monitor, early
stop, budgets), logging, and checkpoints that a killed run resumes from."""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Sequence

from ..data import Query
from ..safeguards import CollapseMonitor, EarlyStopper, budget_reason

log = logging.getLogger(__name__)


class Adaptation:
    def __init__(self, sess):
        self.sess, self.cfg = sess, sess.cfg.safeguards
        self.trainer = sess.trainer
        self.monitor = CollapseMonitor(self.cfg)
        self.stopper = EarlyStopper(self.cfg)
        self.tokens, self.seconds = 0, 0.0
        self.stopped: str | None = None
        self.last_good, self.good_step = self.trainer.snapshot(), 0
        self.counts = {"gate": 0, "collapse": 0, "rollback": 0, "early_stop": 0, "budget": 0}

    def event(self, kind: str, reason: str, **extra: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.sess.out.append("events.jsonl", {"step": self.trainer.steps, "event": kind, "reason": reason, **extra})
        if kind != "gate":
            log.warning("%s at step %d: %s", kind, self.trainer.steps, reason)

    def step(self, queries: Sequence[Query], **extra: Any) -> bool:
        """One update on these queries; False once adaptation has stopped (the step is then skipped)."""
        if self.stopped is None:
            reason = budget_reason(self.cfg, self.trainer.steps, self.tokens, self.seconds)
            if reason:
                self.stopped = reason
                self.event("budget", reason)
        if self.stopped is not None:
            return False
        result = self.trainer.step(queries)
        st = result.stats
        self.tokens += int(st["tokens"])
        self.seconds += st["seconds"]
        for g in result.groups:
            if g.gated:
                self.event("gate", g.gated, item=g.query_id)
        row = {**extra, **st, **self.sess.label_metrics(result)}
        verdict = self.monitor.update(st)
        if verdict:
            row["collapse"] = verdict
            self.event("collapse", verdict, action=self.cfg.monitor)
            if self.cfg.monitor == "rollback":
                self.trainer.restore(self.last_good)
                self.event("rollback", f"restored the adapter of step {self.good_step}", to_step=self.good_step)
            if self.cfg.monitor in ("stop", "rollback"):
                self.stopped = verdict
        elif self.cfg.monitor != "off":
            self.last_good, self.good_step = self.trainer.snapshot(), self.trainer.steps
        early = self.stopper.update(st["reward_mean"])
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
        return time.perf_counter() - t0

    def checkpoint(self, progress: dict[str, Any]) -> None:
        if self.trainer.steps % max(1, self.sess.cfg.run.checkpoint_every) and not progress.get("final"):
            return
        self.sess.out.save_checkpoint({
            "trainer": self.trainer.state_dict(), "progress": progress, "tokens": self.tokens,
            "seconds": self.seconds, "stopped": self.stopped, "counts": self.counts,
            "monitor": self.monitor.state_dict(), "stopper": self.stopper.state_dict(),
            "last_good": self.last_good, "good_step": self.good_step,
        })

    def resume(self, start: dict[str, Any]) -> dict[str, Any]:
        """Protocol progress to start from: `start` for a new run; on --resume, the checkpoint's, with
        the state restored and log rows written after it dropped (those steps are redone)."""
        if not self.sess.resume:
            return start
        state = self.sess.out.load_checkpoint()
        if state is None:
            state = {"trainer": self.trainer.state_dict(), "progress": start, "tokens": 0, "seconds": 0.0,
                     "stopped": None, "counts": self.counts, "monitor": self.monitor.state_dict(),
                     "stopper": self.stopper.state_dict(), "last_good": self.last_good, "good_step": 0}
        self.trainer.load_state_dict(state["trainer"])
        self.tokens, self.seconds, self.stopped = state["tokens"], state["seconds"], state["stopped"]
        self.counts = state["counts"]
        self.monitor.load_state_dict(state["monitor"])
        self.stopper.load_state_dict(state["stopper"])
        self.last_good, self.good_step = state["last_good"], state["good_step"]
        steps = self.trainer.steps
        out = self.sess.out
        out.rewrite("metrics.jsonl", [r for r in out.read("metrics.jsonl") if r["step"] <= steps])
        out.rewrite("events.jsonl", [r for r in out.read("events.jsonl") if r["step"] <= steps])
        for r in out.repairs:  # torn rows the run folder dropped before resuming
            self.event("repaired", r["reason"], file=r["file"], line=r["line"], bytes=r["bytes"])
        return state["progress"]

    def summary(self) -> dict[str, Any]:
        """`updates`: steps that changed the weights (a step whose groups were all gated changes nothing);
        `skipped`: the most frequent gate reason when no step did."""
        out = self.sess.out
        updates = sum(r.get("groups_trained", 0) > 0 for r in out.read("metrics.jsonl"))
        gates = Counter(e["reason"] for e in out.read("events.jsonl") if e["event"] == "gate")
        return {"stopped": self.stopped, "tokens": self.tokens, "adapt_seconds": self.seconds, "updates": updates,
                "skipped": gates.most_common(1)[0][0] if gates and not updates else None,
                **{f"events_{k}": v for k, v in self.counts.items()}}
