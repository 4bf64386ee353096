"""Online and episodic protocols: items arrive one at a time; the model answers each with the
weights it has at that moment (as a deployed system would), and adapts on it (after answering by
default). Online carries the adapted weights to the next item; episodic resets them to the base after
every B items (a LoRA reset is a copy of a few MB of adapter weights and a fresh optimizer)."""
from __future__ import annotations

import logging
import time

import numpy as np
from tqdm.auto import tqdm

from ..data import DataError
from ..evaluate import answer
from ..seeds import derive
from ..session import usable
from . import register_protocol
from .common import Adaptation

log = logging.getLogger(__name__)


def _stream(sess):
    """(line, item) in arrival order: the data set's items (line None), or lines of a JSONL file / stdin
    as they come (an entry is a DataError for a bad line)."""
    if sess.stream is not None:
        yield from sess.stream()
    else:
        yield from ((None, it) for it in sess.eval_items)


def _run(sess, episodic: bool) -> dict:
    cfg, out = sess.cfg, sess.out
    t0 = time.perf_counter()
    p = cfg.protocol
    adaptation = Adaptation(sess)
    progress = adaptation.resume({"items_done": 0})
    answered = {r["id"]: r for r in out.read("predictions.jsonl")}
    if sess.resume:  # what was logged for items after the last checkpoint is redone
        done = progress["items_done"]
        out.rewrite("resets.jsonl", [r for r in out.read("resets.jsonl") if r["index"] < done])
        out.rewrite("events.jsonl", [e for e in out.read("events.jsonl") if e.get("index", -1) < done])
    reset_seconds = [r["seconds"] for r in out.read("resets.jsonl")]
    first = {}  # id -> index of the item that first had it
    greedy = dict(max_new_tokens=cfg.sampling.eval_max_new_tokens, batch_size=cfg.sampling.batch_size)
    bar = tqdm(desc="episodic" if episodic else "online", unit="item", initial=progress["items_done"])
    index = -1
    source = "<stdin>" if cfg.data.data == "-" else cfg.data.data
    for line, entry in _stream(sess):
        index += 1
        if not isinstance(entry, DataError):
            first.setdefault(entry.query.id, index)
        if index < progress["items_done"]:
            continue
        if not isinstance(entry, DataError) and first[entry.query.id] != index:  # its answer would overwrite
            entry = DataError(source, line, "id", f"duplicate id {entry.query.id!r} (first used by item "
                              f"{first[entry.query.id]}; ids name answers)")
        if isinstance(entry, DataError):  # one bad line costs that line only
            log.error("%s (skipped)", entry)
            adaptation.event("bad_input", str(entry), index=index)
            adaptation.checkpoint({"items_done": index + 1, "final": True})
            continue
        item = entry
        if not usable([item], sess.policy, out):  # an unreadable image costs that item only
            adaptation.checkpoint({"items_done": index + 1, "final": True})
            continue
        reason = sess.too_long(item)
        if reason:  # a prompt past the model's context costs that item only
            adaptation.event("bad_input", reason, index=index, item=item.query.id)
            adaptation.checkpoint({"items_done": index + 1, "final": True})
            continue
        sess.known[item.query.id] = item

        def respond():
            if item.query.id in answered:  # answered before a kill: never written twice
                return
            (g,) = answer(sess.policy, sess.extractor, [item.query], sess.instruction,
                          seed=derive(cfg.run.seed, "online", index), desc="", **greedy)
            row = {"id": item.query.id, "index": index, "answer": g.answers[0], "correct": sess.score(g.answers[0], item),
                   "label": item.answer, "step": sess.trainer.steps, "response": g.responses[0]}
            out.append("predictions.jsonl", row)
            answered[item.query.id] = row

        if p.online_order == "answer_first":
            respond()
        for _ in range(p.steps_per_item):
            if not adaptation.step([item.query], item=index):
                break
        if p.online_order == "adapt_first":
            respond()
        if episodic and (index + 1) % p.reset_every == 0:
            cost = adaptation.reset()
            reset_seconds.append(cost)
            out.append("resets.jsonl", {"index": index, "step": sess.trainer.steps, "seconds": cost})
        adaptation.checkpoint({"items_done": index + 1, "final": True})
        bar.update(1)
    bar.close()

    rows = out.read("predictions.jsonl")
    scored = [r["correct"] for r in rows if r["correct"] is not None]
    summary = {
        "online_accuracy": float(np.mean(scored)) if scored else None,
        "n_items": len(rows),
        "steps": sess.trainer.steps,
        **adaptation.summary(),
        "seconds_protocol": time.perf_counter() - t0,
    }
    if episodic:
        summary.update(n_resets=len(reset_seconds),
                       reset_seconds_mean=float(np.mean(reset_seconds)) if reset_seconds else None)
    return summary


@register_protocol("online")
def run_online(sess) -> dict:
    return _run(sess, episodic=False)


@register_protocol("episodic")
def run_episodic(sess) -> dict:
    return _run(sess, episodic=True)
