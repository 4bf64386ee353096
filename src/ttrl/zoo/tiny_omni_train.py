"""Training tiny-omni from a seed (`ttrl zoo build tiny-omni`) and its card (docs/op_ttrav.md).

1. Vision tower alone (tiny-vlm's stage-1 recipe): the small Qwen-ViT + merger classify each easy-vqa TRAIN image's
   shape and colour (a linear head on the mean of the merged tokens, dropped afterwards), with horizontal flips.
2. Projectors through the frozen thinker (the pilot's recipe, scripts/tiny_omni_pilot.py): the audio `proj` and the
   vision `merger` (the tower's blocks at `tower_lr_scale` of the rate; 0 = frozen) train on the spoken easy-vqa
   TRAIN items (closed and open), cross-entropy on the answer tokens. Prompts are rendered and scored exactly as the
   omni backend does (its chat layout, the extractor's instruction, prompt + completion in one pass); the LM runs
   in bfloat16 (frozen), the trained parts in float32.
3. Card: the assembled folder is loaded by the omni backend and answers spoken easy-vqa TEST items greedily with both
   inputs, with the audio removed and with the image removed; closed items scored as easy-vqa (accuracy), open
   items by naming colour and shape, and ROUGE-L against the scene's sentence.

Same seed, same weights: data order, flips and initialisations come from seeded generators, on CPU.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from ..media import load_audio, load_image
from .tiny_omni import ASSET, TRAINED_PREFIXES, Arch, assemble, build, save_weights

KINDS = ("closed", "open")
CONDITIONS = {"both": (True, True), "audio_removed": (False, True), "image_removed": (True, False)}


@dataclass(frozen=True)
class Budget:
    tower_epochs: int = field(default=30, metadata={
        "help": "stage 1 epochs over the 4000 train images (tiny-vlm: 20); shape on test images: 49% after 10 "
                "(tiny-omni-v1), 95% after 30, as it is learnt from epoch ~12 on (docs/op_ttrav.md); ~4 s an epoch"})
    tower_batch: int = field(default=64, metadata={"help": "stage 1 images per step (tiny-vlm: 64)"})
    tower_lr: float = field(default=2e-3, metadata={"help": "stage 1 AdamW learning rate (tiny-vlm: 2e-3)"})
    tower_images: int = field(default=0, metadata={"help": "stage 1 train images used (0 = all; fewer for tests)"})
    tower_eval_images: int = field(default=0, metadata={"help": "test images for the tower's diagnostic (0 = all)"})
    steps: int = field(default=100, metadata={"help": "stage 2 optimizer steps (pilot: 100, 17-18 min)"})
    batch: int = field(default=16, metadata={"help": "stage 2 items per step (pilot: 16)"})
    lr: float = field(default=2e-3, metadata={"help": "stage 2 AdamW learning rate, warmup then cosine (pilot: 2e-3)"})
    tower_lr_scale: float = field(default=0.0, metadata={
        "help": "stage 2: the tower blocks' rate over the projectors'; 0 = frozen (pilot: projectors only)"})
    train_items: int = field(default=0, metadata={"help": "spoken train items per kind (0 = all: 300 closed, 100 open)"})
    eval_closed: int = field(default=100, metadata={"help": "closed test items in the card (seeded sample)"})
    eval_open: int = field(default=50, metadata={"help": "open test items in the card (seeded sample)"})
    eval_batch: int = field(default=8, metadata={"help": "items per greedy generate call in the card"})
    max_new_closed: int = field(default=8, metadata={"help": "new tokens for a closed answer in the card"})
    max_new_open: int = field(default=24, metadata={"help": "new tokens for an open answer in the card"})


def card_path(weights: Path) -> Path:
    return weights.with_name(weights.stem + "_card.json")


# -- stage 1 ------------------------------------------------------------------------------------------
def _images_and_labels(split: str, limit: int):
    from .tiny_vlm_eval import easy_vqa_split
    from .tiny_vlm_train import image_labels

    qs, answers, image_ids, paths = easy_vqa_split(split)
    labels = image_labels(qs, answers, image_ids)
    ids = sorted(labels)[:limit or None]
    return [load_image(paths[i]) for i in ids], torch.tensor([labels[i] for i in ids])


def _tower_logits(visual, head, image_processor, images):
    enc = image_processor(images, return_tensors="pt")
    merged = visual(enc["pixel_values"], grid_thw=enc["image_grid_thw"]).pooler_output
    return head(merged.view(len(images), -1, merged.shape[-1]).mean(1))


def _class_loss(logits, y):
    from .tiny_vlm_train import SHAPES

    n = len(SHAPES)
    return (F.cross_entropy(logits[:, :n], y[:, 0], ignore_index=-1)
            + F.cross_entropy(logits[:, n:], y[:, 1], ignore_index=-1))


def pretrain_tower(model, processor, budget: Budget, seed: int, log=print) -> dict:
    """Stage 1; returns the tower's shape / colour accuracy on test images (a diagnostic: no label reaches a weight
    from the test split)."""
    from PIL import ImageOps

    from .tiny_vlm_train import COLORS, SHAPES

    visual, ip = model.model.visual, processor.image_processor
    images, y = _images_and_labels("train", budget.tower_images)
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(visual.config.out_hidden_size, len(SHAPES) + len(COLORS))
    params = list(visual.parameters()) + list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=budget.tower_lr, weight_decay=0.05)
    per_epoch = math.ceil(len(images) / budget.tower_batch)
    total = max(1, budget.tower_epochs * per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / per_epoch) * 0.5 * (1 + math.cos(math.pi * s / total)))
    t0 = time.time()
    visual.train()
    for ep in range(budget.tower_epochs):
        perm = torch.randperm(len(images), generator=gen)
        run = 0.0
        for b in range(0, len(images), budget.tower_batch):
            idx = perm[b:b + budget.tower_batch].tolist()
            flips = (torch.rand(len(idx), generator=gen) < 0.5).tolist()
            batch = [ImageOps.mirror(images[i]) if f else images[i] for i, f in zip(idx, flips)]
            loss = _class_loss(_tower_logits(visual, head, ip, batch), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run += loss.item() * len(idx)
        log(f"tower epoch {ep + 1}/{budget.tower_epochs} loss {run / len(images):.4f} ({time.time() - t0:.0f} s)")
    visual.eval()
    timages, ty = _images_and_labels("test", budget.tower_eval_images)
    with torch.no_grad():
        logits = torch.cat([_tower_logits(visual, head, ip, timages[b:b + 256]) for b in range(0, len(timages), 256)])
    acc = {}
    for name, col, sl in (("shape", 0, slice(0, len(SHAPES))), ("color", 1, slice(len(SHAPES), None))):
        known = ty[:, col] >= 0
        acc[name] = round(float((logits[known, sl].argmax(1) == ty[known, col]).float().mean()), 4) if known.any() else None
    log(f"tower test-image accuracy {acc}")
    return {"seconds": round(time.time() - t0, 1), "images": len(images), "test_images": len(timages),
            "test_image_accuracy": acc}


# -- stage 2 ------------------------------------------------------------------------------------------
def render(processor, query, instruction: str) -> str:
    """The prompt text as the omni backend renders it (default system prompt: the template's)."""
    from ..prompting import user_message

    content = ([{"type": "audio"} for _ in query.audio] + [{"type": "image"} for _ in query.images]
               + [{"type": "text", "text": user_message(query, instruction)}])
    return processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)


def spoken_items(split: str, per_kind: int, seed: int):
    """[(item, instruction)] of both kinds; the instruction is the one the run's extractor adds."""
    from ..extractors import get_extractor
    from ..tasks import load_dataset

    out = []
    for kind in KINDS:
        ds = load_dataset(f"easyvqa-spoken:{split}", {"kind": kind}, per_kind, seed)
        out += [(it, get_extractor(ds.answer_type).instruction) for it in ds.items]
    return out


def answer_loss(model, processor, batch) -> torch.Tensor:
    """Cross-entropy on the answer tokens (+ the end token), prompt + answer in one pass as OmniScorer scores."""
    tok = processor.tokenizer
    images = [load_image(p) for it, _ in batch for p in it.query.images]
    clips = [load_audio(p) for it, _ in batch for p in it.query.audio]
    enc = processor(text=[render(processor, it.query, ins) for it, ins in batch], images=images or None,
                    audio=clips or None, return_tensors="pt", padding=True)
    answers = [tok(str(it.answer), add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for it, _ in batch]
    lc = max(map(len, answers))
    cids = torch.tensor([a + [tok.pad_token_id] * (lc - len(a)) for a in answers])
    cmask = torch.tensor([[1] * len(a) + [0] * (lc - len(a)) for a in answers])
    media = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    hidden = model.model(input_ids=torch.cat([enc["input_ids"], cids], 1),
                         attention_mask=torch.cat([enc["attention_mask"], cmask], 1), use_cache=False,
                         **media).last_hidden_state
    logits = model.lm_head(hidden[:, -(lc + 1):-1]).float()
    return F.cross_entropy(logits[cmask.bool()], cids[cmask.bool()])


def train_projectors(model, processor, budget: Budget, seed: int, log=print) -> dict:
    model.requires_grad_(False)
    model.model.language_model.to(torch.bfloat16)  # frozen: half the memory traffic, as the pilot
    model.lm_head.to(torch.bfloat16)
    visual, proj = model.model.visual, model.model.audio_tower.proj
    projectors = list(proj.parameters()) + list(visual.merger.parameters())
    blocks = [p for n, p in visual.named_parameters() if not n.startswith("merger.")]
    groups = [{"params": projectors, "lr": budget.lr}]
    if budget.tower_lr_scale > 0:
        groups.append({"params": blocks, "lr": budget.lr * budget.tower_lr_scale})
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    warm = max(1, budget.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / max(1, budget.steps)))))
    items = spoken_items("train", budget.train_items, seed)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    losses, t0 = [], time.time()
    for step in range(budget.steps):
        batch = [items[order[(step * budget.batch + j) % len(order)]] for j in range(budget.batch)]
        loss = answer_loss(model, processor, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 4))
        if (step + 1) % 10 == 0 or step == 0:
            log(f"step {step + 1}/{budget.steps} loss {sum(losses[-10:]) / len(losses[-10:]):.3f} "
                f"({time.time() - t0:.0f} s)")
    seconds = time.time() - t0
    return {"seconds": round(seconds, 1), "seconds_per_step": round(seconds / max(1, budget.steps), 2),
            "train_items": len(items), "loss_curve": losses[::max(1, budget.steps // 15)] + losses[-1:],
            "trainable_parameters": sum(p.numel() for g in groups for p in g["params"])}


# -- card ---------------------------------------------------------------------------------------------
def evaluate(folder: Path, budget: Budget, seed: int) -> dict:
    """Greedy answers through the omni backend, per kind and input condition."""
    from ..backends.omni import OmniBackend
    from ..config import ModelConfig
    from ..evaluate import make_scorer
    from ..extractors import get_extractor
    from ..metrics import rouge_l
    from ..tasks import load_dataset

    backend = OmniBackend(ModelConfig(model=str(folder), device="cpu"), need_reference=False, seed=seed)
    out: dict = {}
    try:
        for kind, n, max_new in (("closed", budget.eval_closed, budget.max_new_closed),
                                 ("open", budget.eval_open, budget.max_new_open)):
            if n <= 0:
                continue
            ds = load_dataset("easyvqa-spoken:test", {"kind": kind}, n, seed)
            ext = get_extractor(ds.answer_type)
            score = make_scorer(ds, ext)
            res = {"n": len(ds.items)}
            for cond, (audio, image) in CONDITIONS.items():
                queries = [dataclasses.replace(it.query, audio=it.query.audio if audio else (),
                                               images=it.query.images if image else ()) for it in ds.items]
                groups = backend.generate([backend.render(q, ext.instruction) for q in queries], 1, temperature=None,
                                          top_p=1.0, max_new_tokens=max_new, batch_size=budget.eval_batch, seed=seed)
                texts = [g[0].text for g in groups]
                row = {"accuracy": round(sum(bool(score(ext.extract(t), it)) for t, it in zip(texts, ds.items))
                                         / len(texts), 4), "examples": texts[:3]}
                if kind == "open":
                    row["rouge_l"] = round(rouge_l(texts, [str(it.answer) for it in ds.items]), 4)
                res[cond] = row
            out[kind] = res
    finally:
        backend.close()
    return out


def train(arch: Arch, budget: Budget, seed: int = 0, out: Path = ASSET, folder: Path | None = None,
          threads: int = 1, log=print) -> dict:
    """Build, write the weights to `out` and the card beside them; keep the assembled folder at `folder` if given
    (replaced if it exists)."""
    torch.set_num_threads(threads)
    t0 = time.time()
    model, processor = build(arch, seed=seed)
    stage1 = pretrain_tower(model, processor, budget, seed, log) if budget.tower_epochs > 0 else None
    stage2 = train_projectors(model, processor, budget, seed, log)
    save_weights({k: v for k, v in model.state_dict().items() if k.startswith(TRAINED_PREFIXES)}, arch, Path(out))
    train_seconds = time.time() - t0
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(folder) if folder is not None else Path(tmp) / "tiny-omni"
        if where.exists():
            shutil.rmtree(where)  # a folder from an earlier build would hold other weights
        assemble(where, Path(out))
        t1 = time.time()
        evaluation = evaluate(where, budget, seed)
    card = {"model": "tiny-omni", "built": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": seed,
            "arch": asdict(arch), "budget": asdict(budget), "weights_bytes": Path(out).stat().st_size,
            "training": {"tower": stage1, "projectors": stage2, "train_seconds": round(train_seconds, 1),
                         "eval_seconds": round(time.time() - t1, 1)},
            "evaluation": evaluation,
            "parts": {"audio": "whisper-base encoder (frozen) + trained proj", "vision": "small Qwen-ViT trained here",
                      "language": "SmolLM2-135M-Instruct (frozen)"}}
    card_path(Path(out)).write_text(json.dumps(card, indent=1) + "\n")
    return card
