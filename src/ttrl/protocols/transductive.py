"""Transductive protocol (TTRV): adapt on K unlabeled items for E epochs, then evaluate greedily on
the whole evaluation set; the base model is evaluated on the same set in the same run."""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..evaluate import answer, majority_answer
from ..session import Session
from . import register_protocol


@register_protocol("transductive")
def run_transductive(sess: Session) -> dict:
    cfg, items, out = sess.cfg, sess.eval_items, sess.out
    t0 = time.perf_counter()
    s = cfg.sampling
    greedy = dict(max_new_tokens=s.eval_max_new_tokens, batch_size=s.batch_size)
    queries = [it.query for it in items]
    by_id = {it.query.id: it for it in items}

    # base model, greedy and majority of N samples (the ceiling that sharpening aims at)
    base = {q.id: a[0] for q, _, a in answer(sess.policy, sess.extractor, queries, sess.instruction,
                                             seed=cfg.run.seed, desc="base eval", **greedy)}
    base_maj = {}
    if cfg.protocol.base_maj_votes > 0:
        for q, _, answers in answer(sess.policy, sess.extractor, queries, sess.instruction,
                                    n=cfg.protocol.base_maj_votes, temperature=s.temperature, top_p=s.top_p,
                                    max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
                                    seed=cfg.run.seed + 7, desc=f"base maj@{cfg.protocol.base_maj_votes}"):
            base_maj[q.id] = majority_answer(answers, sess.extractor)

    # adaptation: the trainer gets queries only
    rng = np.random.default_rng(cfg.run.seed)
    adapt = sess.adapt_items
    steps = cfg.protocol.epochs * -(-len(adapt) // cfg.grpo.prompts_per_step)
    bar = tqdm(total=steps, desc="adapt", unit="step")
    for epoch in range(cfg.protocol.epochs):
        order = rng.permutation(len(adapt))
        for start in range(0, len(order), cfg.grpo.prompts_per_step):
            batch = [adapt[i] for i in order[start:start + cfg.grpo.prompts_per_step]]
            result = sess.trainer.step([it.query for it in batch])
            row = {"epoch": epoch, **result.stats, **sess.label_metrics(result)}
            sess.out.append("metrics.jsonl", row)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_mean']:.2f}", maj=f"{row['majority_ratio']:.2f}")
    bar.close()

    # adapted model, greedy, written item by item
    correct = {"base": [], "adapted": [], "base_maj": []}
    for q, texts, a in answer(sess.policy, sess.extractor, queries, sess.instruction,
                              seed=cfg.run.seed, desc="adapted eval", **greedy):
        it = by_id[q.id]
        row = {"id": q.id, "base_answer": base[q.id], "adapted_answer": a[0], "base_maj_answer": base_maj.get(q.id),
               "label": it.answer, "response": texts[0]}
        for k, pred in (("base", base[q.id]), ("adapted", a[0]), ("base_maj", base_maj.get(q.id))):
            if k == "base_maj" and not base_maj:
                continue
            ok = sess.score(pred, it)
            row[f"{k}_correct"] = ok
            if ok is not None:
                correct[k].append(ok)
        out.append("predictions.jsonl", row)

    def acc(k):
        return float(np.mean(correct[k])) if correct[k] else None

    return {
        "base_accuracy": acc("base"),
        "adapted_accuracy": acc("adapted"),
        "base_maj_accuracy": acc("base_maj"),
        "n_adapt": len(adapt),
        "n_eval": len(items),
        "steps": sess.trainer.steps,
        "seconds_protocol": time.perf_counter() - t0,
    }
