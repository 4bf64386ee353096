"""Transductive protocol (TTRV): adapt on K unlabeled items for E epochs, then evaluate greedily on
the whole evaluation set; the base model is evaluated on the same set in the same run."""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..evaluate import answer, majority_answer
from ..metrics import bleu, pass_at_k, rouge_l
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
    base, base_text = {}, {}
    for q, texts, a in answer(sess.policy, sess.extractor, queries, sess.instruction, seed=cfg.run.seed,
                              desc="base eval", **greedy):
        base[q.id], base_text[q.id] = a[0], texts[0]
    base_maj, base_pass, base_pass_n = {}, [], []
    n_votes = cfg.protocol.base_maj_votes
    if n_votes > 0:
        for q, _, answers in answer(sess.policy, sess.extractor, queries, sess.instruction, n=n_votes,
                                    temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                    batch_size=s.batch_size, seed=cfg.run.seed + 7, desc=f"base maj@{n_votes}"):
            base_maj[q.id] = majority_answer(answers, sess.extractor)
            if by_id[q.id].answer is not None:
                c = sum(bool(sess.score(a, by_id[q.id])) for a in answers)
                base_pass.append(pass_at_k(n_votes, c, 1))
                base_pass_n.append(pass_at_k(n_votes, c, n_votes))

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
    adapted_text = {}
    for q, texts, a in answer(sess.policy, sess.extractor, queries, sess.instruction,
                              seed=cfg.run.seed, desc="adapted eval", **greedy):
        it = by_id[q.id]
        adapted_text[q.id] = texts[0]
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

    summary = {
        "base_accuracy": acc("base"),
        "adapted_accuracy": acc("adapted"),
        "base_maj_accuracy": acc("base_maj"),
        "base_sample_accuracy": float(np.mean(base_pass)) if base_pass else None,  # pass@1 of T>0 samples
        "base_pass_at_n": float(np.mean(base_pass_n)) if base_pass_n else None,  # any of the N samples right
        "n_adapt": len(adapt),
        "n_eval": len(items),
        "steps": sess.trainer.steps,
        "seconds_protocol": time.perf_counter() - t0,
    }
    if sess.answer_type in {"text", "label"}:  # free-form answers: also overlap with the references
        labelled = [it for it in items if it.answer is not None]
        refs = [str(it.answer) for it in labelled]
        for name, texts in (("base", base_text), ("adapted", adapted_text)):
            if labelled:
                preds = [texts[it.query.id] for it in labelled]
                summary[f"{name}_bleu"], summary[f"{name}_rouge_l"] = bleu(preds, refs), rouge_l(preds, refs)
    return summary
