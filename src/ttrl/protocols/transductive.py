"""Transductive protocol (TTRV): adapt on K unlabeled items for E epochs, then evaluate greedily on
the whole evaluation set; the base model is evaluated on the same set in the same run.

Every phase writes as it goes (base.jsonl, metrics.jsonl, predictions.jsonl) and a checkpoint
follows each update, so a killed run resumes where it stopped without redoing or losing work."""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..evaluate import answer
from ..metrics import bleu, cer, embedding_similarity, pass_at_k, rouge_l, wer
from ..prior_monitor import base_shares_from, base_word_shares_from, monitor_key, top_share
from ..rewards.embedder import get_embedder
from ..rewards.embedding import medoid_index
from ..seeds import derive
from . import register_protocol
from .common import WRITTEN, Adaptation


def adapt_epochs(sess, adaptation: Adaptation, progress: dict, after_step=None) -> None:
    """E epochs over the K adaptation items in seeded order, prompts_per_step queries per update, checkpointing after
    each (resumable mid-epoch); `after_step()` runs after every update (the image protocol logs rubrics there)."""
    cfg = sess.cfg
    adapt, per_step = sess.adapt_items, cfg.grpo.prompts_per_step
    batches_per_epoch = -(-len(adapt) // per_step)
    bar = tqdm(total=cfg.protocol.epochs * batches_per_epoch, desc="adapt", unit="step",
               initial=progress["epoch"] * batches_per_epoch + progress["pos"] // per_step)
    for epoch in range(progress["epoch"], cfg.protocol.epochs):
        order = np.random.default_rng(derive(cfg.run.seed, "epoch", epoch)).permutation(len(adapt))  # resumable
        start0 = progress["pos"] if epoch == progress["epoch"] else 0
        for start in range(start0, len(order), per_step):
            batch = [adapt[i] for i in order[start:start + per_step]]
            going = adaptation.step([it.query for it in batch], epoch=epoch)
            if after_step is not None:
                after_step()
            nxt = (epoch, start + per_step) if start + per_step < len(order) else (epoch + 1, 0)
            adaptation.checkpoint({"epoch": nxt[0], "pos": nxt[1]})
            bar.update(1)
            if not going:
                break
        if adaptation.stopped:
            break
    bar.close()
    adaptation.checkpoint({"epoch": cfg.protocol.epochs, "pos": 0, "final": True})


@register_protocol("transductive")
def run_transductive(sess) -> dict:
    if sess.images:  # text-to-image (Meta-TTRL): images, the pixel checker, a grid
        from .images import run_image_transductive

        return run_image_transductive(sess)
    cfg, items, out = sess.cfg, sess.eval_items, sess.out
    t0 = time.perf_counter()
    s = cfg.sampling
    greedy = dict(max_new_tokens=s.eval_max_new_tokens, batch_size=s.batch_size)
    queries = [it.query for it in items]
    by_id = {it.query.id: it for it in items}
    adaptation = Adaptation(sess)
    progress = adaptation.resume({"epoch": 0, "pos": 0})

    # 1. base model: greedy, and N samples for maj@N / pass@k (the ceiling that sharpening aims at)
    done = {r["id"] for r in out.read("base.jsonl")}
    if cfg.protocol.base_eval:
        for g in answer(sess.policy, sess.extractor, queries, sess.instruction, seed=derive(cfg.run.seed, "greedy"),
                        desc="base eval", skip=done, **greedy):
            out.append("base.jsonl", {"id": g.query.id, "base_answer": g.answers[0], "base_response": g.responses[0]})
    n_votes = cfg.protocol.base_maj_votes if cfg.protocol.base_eval else 0
    if n_votes > 0:
        done = {r["id"] for r in out.read("base_votes.jsonl")}
        for g in answer(sess.policy, sess.extractor, queries, sess.instruction, n=n_votes,
                        temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                        batch_size=s.batch_size, seed=derive(cfg.run.seed, "base_votes"), desc=f"base maj@{n_votes}",
                        skip=done):
            it = by_id[g.query.id]
            n_ok = None if it.answer is None else sum(bool(sess.score(v, it)) for v in g.answers)
            out.append("base_votes.jsonl", {"id": g.query.id, "maj_answer": g.majority_answer,
                                            "votes": list(g.answers), "n_correct": n_ok})

    # the base model's own answer prior, against which the answer-prior monitor judges a collapse
    base_rows = out.read("base.jsonl")
    keyed = [(monitor_key(by_id[r["id"]].query, r["base_answer"]), r["base_answer"]) for r in base_rows if r["id"] in by_id]
    adaptation.prior.base.update(base_shares_from(keyed))
    adaptation.prior.base_words.update(base_word_shares_from(keyed))
    # greedy base answers see the original order, so they are also the base of the letters written
    adaptation.prior.base.update({WRITTEN + k: v for k, v in list(adaptation.prior.base.items())
                                  if not k.startswith(WRITTEN)})

    # 2. adaptation on K items: the trainer gets queries only
    adapt_epochs(sess, adaptation, progress)
    adapt = sess.adapt_items

    # 3. adapted model, greedy, written item by item
    base = {r["id"]: r for r in base_rows}  # base.jsonl is complete once the base phase is done
    votes = {r["id"]: r for r in out.read("base_votes.jsonl")}
    done = {r["id"] for r in out.read("predictions.jsonl")}
    for g in answer(sess.policy, sess.extractor, queries, sess.instruction, seed=derive(cfg.run.seed, "greedy"),
                    desc="adapted eval", skip=done, **greedy):
        q, a = g.query, g.answers
        it = by_id[q.id]
        row = {"id": q.id, "base_answer": base[q.id]["base_answer"] if q.id in base else None, "adapted_answer": a[0],
               "base_maj_answer": votes[q.id]["maj_answer"] if q.id in votes else None, "label": it.answer,
               "response": g.responses[0]}
        if q.id in base:
            row["base_correct"] = sess.score(row["base_answer"], it)
        row["adapted_correct"] = sess.score(a[0], it)
        if q.id in votes:
            row["base_maj_correct"] = sess.score(row["base_maj_answer"], it)
        out.append("predictions.jsonl", row)

    preds = out.read("predictions.jsonl")

    def mean(key, rows=preds):
        xs = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(xs)) if xs else None

    counted = [v for v in votes.values() if v["n_correct"] is not None]
    # TTRV's protocol evaluates on a set that contains the adaptation items: report both parts apart
    adapted_ids = {it.query.id for it in adapt}
    seen = [r for r in preds if r["id"] in adapted_ids]
    unseen = [r for r in preds if r["id"] not in adapted_ids]
    split = {}
    for part, rows in (("adapted_items", seen), ("other_items", unseen)):
        split.update({f"{part}_base_accuracy": mean("base_correct", rows),
                      f"{part}_adapted_accuracy": mean("adapted_correct", rows), f"n_{part}": len(rows)})
    summary = {
        "base_accuracy": mean("base_correct"),
        "adapted_accuracy": mean("adapted_correct"),
        "base_maj_accuracy": mean("base_maj_correct"),
        **split,
        # pass@1 of the sampled votes, and pass@N (any of the N samples right)
        "base_sample_accuracy": float(np.mean([pass_at_k(n_votes, v["n_correct"], 1) for v in counted]))
        if counted else None,
        "base_pass_at_n": float(np.mean([pass_at_k(n_votes, v["n_correct"], n_votes) for v in counted]))
        if counted else None,
        # share of the most common answer over all evaluated items: one answer everywhere is answer-prior collapse
        "base_top_answer_share": top_share(r["base_answer"] for r in preds if r.get("base_answer") is not None)[1],
        "adapted_top_answer_share": top_share(r["adapted_answer"] for r in preds
                                              if r.get("adapted_answer") is not None)[1],
        "n_adapt": len(adapt),
        "n_eval": len(items),
        "steps": sess.trainer.steps,
        **adaptation.summary(),
        "seconds_protocol": time.perf_counter() - t0,
    }
    if sess.answer_type == "transcript":  # speech: corpus WER / CER of the normalised transcripts
        summary.update(error_rates(sess, preds, base, votes))
    if sess.answer_type in {"text", "label"}:  # free-form answers: also overlap with the references
        labelled = [r for r in preds if r["label"] is not None]
        refs = [str(r["label"]) for r in labelled]
        for name, texts in (("base", {k: v["base_response"] for k, v in base.items()}),
                            ("adapted", {r["id"]: r["response"] for r in preds})):
            if labelled and all(r["id"] in texts for r in labelled):
                hyps = [texts[r["id"]] for r in labelled]
                summary[f"{name}_bleu"], summary[f"{name}_rouge_l"] = bleu(hyps, refs), rouge_l(hyps, refs)
                if sess.answer_type == "text":  # sentences: also closeness in meaning (OP-TTRAV's third metric)
                    summary[f"{name}_embedding_similarity"] = embedding_similarity(
                        hyps, refs, get_embedder(sess.trainer.ctx.state))
    if sess.answer_type == "text" and counted:
        summary["base_medoid_accuracy"] = medoid_accuracy(sess, votes, by_id)
    return summary


def medoid_accuracy(sess, votes: dict, by_id: dict) -> float | None:
    """Free text's maj@N: accuracy of the medoid of each item's N base samples (the answer embedding_medoid pushes
    towards). Sentences rarely repeat, so an exact-text majority is one arbitrary sample; where the medoid is no
    better than greedy, consensus rewards have nothing to sharpen towards (issue 16's finding, for sentences)."""
    embedder, hits = get_embedder(sess.trainer.ctx.state), []
    for v in votes.values():
        answers = [a for a in v["votes"] if a]
        if answers and by_id[v["id"]].answer is not None:
            hits.append(bool(sess.score(answers[medoid_index(embedder.encode(answers))], by_id[v["id"]])))
    return float(np.mean(hits)) if hits else None


def error_rates(sess, preds: list[dict], base: dict, votes: dict) -> dict:
    """base_wer, adapted_wer, base_maj_wer (and _cer) over the labelled items, when every one has that transcript;
    answers are the transcript extractor's normalised text (None, an empty transcript, counts as all deletions)."""
    labelled = [r for r in preds if r["label"] is not None]
    if not labelled:
        return {}
    refs = [sess.extractor.extract(str(r["label"])) or "" for r in labelled]
    out = {}
    for name, key, present in (("base", "base_answer", lambda r: r["id"] in base), ("adapted", "adapted_answer", None),
                               ("base_maj", "base_maj_answer", lambda r: r["id"] in votes)):
        if present is None or all(present(r) for r in labelled):
            hyps = [r.get(key) for r in labelled]
            out[f"{name}_wer"], out[f"{name}_cer"] = wer(hyps, refs), cer(hyps, refs)
    return out
