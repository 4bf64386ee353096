"""Training tiny-janus from a seed (`ttrl zoo build tiny-janus`), in stages on scenes of `scenes:train`, and its
card (measured on `scenes:test`, never trained on).

1. VQ tokenizer alone: L2 reconstruction + codebook / commitment loss (van den Oord et al. 2017) with the codes and
   encoder outputs l2-normalised (Janus' VQ decodes normalised codes: LlamaGen's tokenizer), unused codes
   re-seeded from encoder outputs (a standard remedy for dead codes, Dhariwal et al. 2020, Jukebox); stops early
   once the checker passes enough reconstructions of held-out drawings.
2. Generation: generation embeddings / aligner / head + a LoRA on the LM, next-image-token cross-entropy on
   (prompt, VQ tokens of the drawn scene), the prompt replaced by the unconditional form 10% of the time (what
   classifier-free guidance needs; Janus trains the same way); the LoRA is then merged. By default
   (`gen_text_keep`) each step also pays the KL of the LM's next-token distribution from the frozen LM's on scenes
   described in words with a yes/no question, so a long stage leaves the LM able to learn the understanding stage
   (Janus keeps its text skills by mixing text data; docs/meta_ttrl.md, session 20).
3. Understanding: the encoder is first pre-trained alone on per-patch colour + shape labels (no LM pass: cheap),
   the aligner then regressed onto the words of each patch (colour + shape embeddings), a second LoRA warmed up on
   scenes described in words, then encoder + aligner + that LoRA on yes/no questions about drawn scenes as minimal
   pairs (one rule-rubric question asked of a scene and of the scene changed in one attribute, so the question text
   alone predicts nothing: docs/tiny_janus_understanding.md), cross-entropy on the
   answer token right after the prompt exactly as the t2i backend renders it, over the two answers (No, Yes): the
   introspection score reads only P(Yes) / (P(Yes) + P(No)); stops early once a held-out probe passes.
   Optionally (`und_gen_replay`, off by default) every understanding step also replays a small generation batch:
   the LM is shared, and a LoRA trained on understanding alone erases most of what the generation LoRA learned
   about the prompt; the replay keeps it, but the drawings were not better (docs/meta_ttrl.md, session 14).
   Understanding comes last so the card's yes/no accuracy measures the LM as this stage left it.

The two LoRAs ship as one set of factors per module (stack_lora), merged at assembly.

Same seed, same weights: every batch, spec and drawing comes from seeded generators (seeds.derive), float32 on CPU.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..backends.t2i import NO_WORDS, YES_WORDS, image_prompt_ids, left_padded, unconditional
from ..data import Query
from ..engines.base import positions
from ..prompting import user_message
from ..rubric import rule_rubric
from ..scenes import (
    PALETTE,
    SHAPES,
    CheckOptions,
    DrawOptions,
    SceneSpec,
    Thing,
    check,
    classify_shape,
    colour_map,
    draw,
    summarize,
)
from ..seeds import derive
from ..tasks.scenes import split
from .lora import merged, stack_lora, with_lora
from .tiny_janus import (
    ASSET,
    CARD_NAME,
    PIXEL_MEAN,
    PIXEL_STD,
    SPECIAL,
    TRAINED_PREFIXES,
    Arch,
    assemble,
    build,
    save_weights,
)

YES_NO = "Answer with Yes or No."  # the t2i backend's default ImageGenOptions.yes_no_instruction


@dataclass(frozen=True)
class Budget:
    vq_steps: int = field(default=2000, metadata={
        "help": "most VQ tokenizer steps (0.6 s a step; test reconstructions passing the checker: 18%% after 600, "
                "73%% after 2000, docs/meta_ttrl.md)"})
    vq_batch: int = field(default=16, metadata={"help": "scenes per VQ step"})
    vq_lr: float = field(default=1e-3, metadata={"help": "VQ AdamW learning rate"})
    beta: float = field(default=0.25, metadata={"help": "commitment weight (van den Oord et al. 2017)"})
    vq_reseed_every: int = field(default=100, metadata={
        "help": "VQ steps after which codes unused since the last check are re-seeded from the batch's encoder "
                "outputs (dead-code restarts, as in Jukebox / SoundStream); 0: off"})
    vq_probe_every: int = field(default=100, metadata={
        "help": "VQ steps between checks of the early stop (reconstructions of held-out train-split drawings)"})
    vq_probe_n: int = field(default=32, metadata={"help": "drawings in the VQ early-stop probe (scenes:train specs)"})
    vq_stop_pass: float = field(default=0.95, metadata={
        "help": "stop VQ once this share of probe reconstructions fully passes the checker (the design's target)"})
    und_steps: int = field(default=150, metadata={
        "help": "most understanding steps, early-stopped by the probe (~6 s a step under load: the LM dominates)"})
    und_batch: int = field(default=16, metadata={"help": "yes/no questions per understanding step"})
    und_lr: float = field(default=1e-4, metadata={
        "help": "understanding encoder + aligner AdamW lr (1e-3: loss 3.1 then 1.4-1.8 over "
                "the first 50 steps, above chance, docs/tiny_janus_understanding.md)"})
    enc_steps: int = field(default=2000, metadata={
        "help": "encoder pre-training steps on per-patch colour + shape labels (cheap: no LM in the loop; shape on "
                "drawn patches 65%% after 600 at lr 1e-4, 99%% after 2000 at 1e-3, docs/tiny_janus_understanding.md)"})
    enc_lr: float = field(default=1e-3, metadata={"help": "encoder pre-training AdamW learning rate"})
    enc_batch: int = field(default=32, metadata={"help": "drawings per encoder pre-training step"})
    und_lora_lr: float = field(default=3e-4, metadata={
        "help": "understanding LoRA AdamW lr (3e-4: learns text-described pairs to 91%% in 60 steps, "
                "docs/tiny_janus_understanding.md)"})
    align_steps: int = field(default=300, metadata={
        "help": "aligner steps regressing image tokens onto colour + shape word embeddings (no LM: ~1 min; 0: off)"})
    align_lr: float = field(default=1e-3, metadata={"help": "aligner pre-training AdamW learning rate"})
    und_text_steps: int = field(default=200, metadata={
        "help": "most understanding LoRA warm-up steps on scenes described in words (described_pairs) before images: "
                "SmolLM2 answers those 50%% untrained (docs/tiny_janus_understanding.md); early-stopped by "
                "und_text_stop_acc"})
    und_text_stop_acc: float = field(default=0.9, metadata={
        "help": "end the warm-up once its last 3 batches are answered this well: the logic is learned at a threshold "
                "(stage alone: 58%% at 40 steps, 91%% at 60; after the generation LoRA, loss still 0.685 at 60)"})
    und_lora_r: int = field(default=8, metadata={
        "help": "understanding LoRA rank on the LM (0: encoder + aligner only; the frozen LM alone plateaued at 72%% "
                "yes/no, docs/meta_ttrl.md)"})
    und_gen_replay: float = field(default=0.0, metadata={
        "help": "weight of a generation batch's next-image-token loss added to every understanding step (0: off; "
                "Janus mixes the tasks the same way): without it the understanding LoRA erases 56-72%% of the "
                "generation's colour conditioning; 1.0 keeps it (x4) but drew no better, so off (docs/meta_ttrl.md)"})
    und_through_vq: float = field(default=0.0, metadata={
        "help": "share of the drawings the understanding encoder trains on (encoder pre-training, aligner, yes/no) "
                "replaced by their VQ reconstruction, labels kept from the drawn scene, since the judge reads decoded "
                "images at test time. 0: off (the shipped recipe already reads reconstructions, AUC 0.99 against "
                "the clean drawing's checker reading; 0.5 left its disagreement with the checker on the model's drawings nearly as "
                "it was, docs/meta_ttrl.md session 17)"})
    und_gen_replay_batch: int = field(default=4, metadata={"help": "(prompt, image) sequences per replay batch"})
    und_pairs: bool = field(default=True, metadata={
        "help": "train understanding on minimal pairs (paired_questions): without, the question text alone predicts "
                "68%% of answers and the stage stalled there (docs/tiny_janus_understanding.md)"})
    und_probe_every: int = field(default=25, metadata={
        "help": "understanding steps between checks of the early stop (yes/no on held-out train-split drawings)"})
    und_probe_n: int = field(default=64, metadata={"help": "questions in the understanding early-stop probe"})
    und_stop_acc: float = field(default=0.9, metadata={
        "help": "stop understanding once probe yes/no accuracy reaches this (margin over the card's 85%% target)"})
    gen_steps: int = field(default=600, metadata={
        "help": "generation steps (~2.3 s a step at 2 threads alone: 23 min); 200 barely read the prompt (colour own "
                "vs blind 35.5 vs 30.7%%), 600 with gen_text_keep do (27.5 vs 17.7%%; docs/meta_ttrl.md session 21)"})
    gen_batch: int = field(default=8, metadata={"help": "(prompt, image) sequences per generation step"})
    gen_lr: float = field(default=1e-3, metadata={"help": "generation AdamW learning rate (head and LoRA)"})
    lora_r: int = field(default=16, metadata={"help": "generation LoRA rank on the LM (merged before shipping)"})
    gen_text_keep: float = field(default=1.0, metadata={
        "help": "weight of KL(LM with the generation LoRA || LM without) on scenes described in words + a yes/no "
                "question, added to every generation step (0: off): the LM is shared and a long generation stage "
                "left it unable to learn the yes/no logic (600 steps: yes/no 51%%; with 1.0: warm-up done in 103 steps, "
                "yes/no 91%%, docs/meta_ttrl.md session 20); Janus keeps its text skills by mixing text data"})
    gen_text_batch: int = field(default=8, metadata={"help": "described questions per text-keeping batch"})
    uncond_prob: float = field(default=0.1, metadata={
        "help": "share of generation sequences with the unconditional prompt (Janus trains CFG this way)"})
    eval_n: int = field(default=100, metadata={"help": "scenes:test prompts / images measured for the card"})


# -- data ----------------------------------------------------------------------------------------------
def scenes(specs: list[SceneSpec], n: int, seed: int, size: int) -> list[tuple[SceneSpec, object]]:
    """n (spec, drawn image) pairs, specs and drawings from `seed`."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(len(specs), size=n)
    return [(specs[i], draw(specs[i], int(rng.integers(2**31)), DrawOptions(size=size))) for i in pick]


def pixels(images) -> torch.Tensor:
    """[B, 3, H, W] in the Janus image processor's normalised space."""
    x = torch.tensor(np.stack([np.asarray(im, dtype=np.float32) / 255 for im in images])).permute(0, 3, 1, 2)
    mean, std = torch.tensor(PIXEL_MEAN)[:, None, None], torch.tensor(PIXEL_STD)[:, None, None]
    return (x - mean) / std


def to_images(x: torch.Tensor) -> list:
    from PIL import Image

    mean, std = torch.tensor(PIXEL_MEAN)[:, None, None], torch.tensor(PIXEL_STD)[:, None, None]
    arr = ((x.detach() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


def changed(spec: SceneSpec, rng: np.random.Generator, kind: str | None = None) -> SceneSpec | None:
    """The spec with one attribute changed so that a question about it is false in the true scene: an object's
    colour or shape (to one no object of the scene has), a count, or the relation reversed. `kind` names the
    attribute (None if the scene has none to change); by default a random one, a colour when that one cannot."""
    things = list(spec.things)
    k = int(rng.integers(len(things)))
    t = things[k]
    forced = kind is not None
    kind = kind if forced else rng.choice(["colour", "shape", "count", "relation"])
    if kind == "relation" and spec.relation:
        return SceneSpec(spec.things, OPPOSITE[spec.relation])
    if kind == "count" and t.count > 1:
        things[k] = Thing(t.shape, t.colour, int(rng.choice([c for c in (2, 3) if c != t.count] or [1])))
        return SceneSpec(tuple(things), spec.relation)
    if kind == "shape":
        free = [s for s in SHAPES if all(s != u.shape for u in spec.things)]
        if free:
            things[k] = Thing(str(rng.choice(free)), t.colour, t.count)
            return SceneSpec(tuple(things), spec.relation)
    if forced and kind != "colour":
        return None
    free = [c for c in PALETTE if all(c != u.colour for u in spec.things)]
    things[k] = Thing(t.shape, str(rng.choice(free)), t.count)
    return SceneSpec(tuple(things), spec.relation)


def yes_no_question(spec: SceneSpec, rng: np.random.Generator, want_yes: bool) -> tuple[str, bool] | None:
    """A rule-rubric question about the scene whose answer is `want_yes`: from the true prompt for yes; for no, a
    question of a changed scene's rubric that the true rubric does not contain."""
    true_qs = rule_rubric(spec.prompt())
    if want_yes:
        return str(rng.choice(true_qs)), True
    false_qs = [q for q in rule_rubric(changed(spec, rng).prompt()) if q not in true_qs]
    return (str(rng.choice(false_qs)), False) if false_qs else None


def paired_questions(pairs, seed: int, size: int) -> list[tuple[object, str, bool]]:
    """Minimal pairs: per scene, one question asked of its drawing and of the drawing of the scene changed in one
    attribute (changed), true in one and false in the other (Goyal et al. 2017's balanced VQA), so the question
    text alone predicts nothing and only the image can lower the loss. 2 triples per scene, yes and no alike."""
    rng = np.random.default_rng(seed)
    out = []
    for spec, im in pairs:
        true_qs = rule_rubric(spec.prompt())
        for _ in range(8):  # a change that some question tells apart (always the first in practice)
            other = changed(spec, rng)
            other_qs = rule_rubric(other.prompt())
            sides = [(q, True) for q in true_qs if q not in other_qs] + [(q, False) for q in other_qs if q not in true_qs]
            if sides:
                break
        q, true_here = sides[int(rng.integers(len(sides)))]
        other_im = draw(other, int(rng.integers(2**31)), DrawOptions(size=size))
        out += [(im, q, true_here), (other_im, q, not true_here)]
    return out


def described_pairs(pairs, seed: int) -> list[tuple[str, str, bool]]:
    """paired_questions with the scene described in words ("a red circle above a blue square") instead of drawn."""
    rng = np.random.default_rng(seed)
    out = []
    for spec, _ in pairs:
        other = changed(spec, rng)
        true_qs, other_qs = rule_rubric(spec.prompt()), rule_rubric(other.prompt())
        sides = [(q, True) for q in true_qs if q not in other_qs] + [(q, False) for q in other_qs if q not in true_qs]
        q, true_here = sides[int(rng.integers(len(sides)))]
        out += [(spec.prompt().capitalize(), q, true_here), (other.prompt().capitalize(), q, not true_here)]
    return out


def described_prompts(tok, rows) -> dict:
    """Tokenised chat prompts for described_pairs rows, as the understanding warm-up asks them (left as the
    tokenizer pads)."""
    texts = [tok.apply_chat_template([{"role": "user", "content": f"{d}.\n" + user_message(Query("q", q), YES_NO)}],
                                     add_generation_prompt=True, tokenize=False) for d, q, _ in rows]
    return tok(texts, return_tensors="pt", padding=True)


def questions_for(pairs, seed: int) -> list[tuple[object, str, bool]]:
    """Balanced (image, question, answer) triples: yes and no in turn."""
    rng = np.random.default_rng(seed)
    out = []
    for j, (spec, im) in enumerate(pairs):
        q = yes_no_question(spec, rng, want_yes=j % 2 == 0) or yes_no_question(spec, rng, want_yes=True)
        out.append((im, *q))
    return out


# -- stage 1: VQ ----------------------------------------------------------------------------------------
def encode_z(vq, x: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """l2-normalised latents [B, D, g, g]. window 0: the whole image at once, as JanusVQVAE.encode does; w: each
    patch's latent from its own w x w neighbourhood alone (white beyond the border), so a code depends only on what
    is drawn near its patch. The encoder's GroupNorms and attention otherwise spread every shape over all the codes
    of the image (docs/meta_ttrl.md, session 19). Default: the VQ config's `encode_window` (Arch.vq_window; 0 when
    absent)."""
    window = getattr(vq.config, "encode_window", 0) if window is None else window
    if not window:
        return F.normalize(vq.quant_conv(vq.encoder(x)), dim=1)
    b, ch, side, _ = x.shape
    g = side // 2 ** (len(vq.config.channel_multiplier) - 1)
    patch, margin = side // g, (window - side // g) // 2
    win = F.pad(x, (margin,) * 4, value=1.0).unfold(2, window, patch).unfold(3, window, patch)  # [B, C, g, g, w, w]
    win = win.permute(0, 2, 3, 1, 4, 5).reshape(b * g * g, ch, window, window)
    blank = (win == 1.0).flatten(1).all(1)  # all-white windows (most of a scene) are encoded once
    first = int(blank.nonzero()[0]) if blank.any() else None
    keep = ~blank
    if first is not None:
        keep[first] = True
    h = vq.quant_conv(vq.encoder(win[keep]))
    c = h.shape[-1] // 2  # the latent cell under the window's centre patch
    z = F.normalize(h[:, :, c, c], dim=1)
    if first is not None:  # row of each window in z: its rank among the kept ones; a blank one: the first blank's
        z = z[(torch.cumsum(keep, 0) - 1).masked_fill(blank, int(keep[:first].sum()))]
    return z.view(b, g, g, -1).permute(0, 3, 1, 2)


def vq_forward(vq, x: torch.Tensor, beta: float = 0.25, window: int | None = None):
    """(reconstruction, codebook + commitment loss, tokens [B, g*g]) with l2-normalised codes, as
    JanusVQVAE.decode reads them (get_codebook_entry normalises), and a straight-through gradient."""
    z = encode_z(vq, x, window)  # [B, D, g, g]
    b, d, g, _ = z.shape
    codes = F.normalize(vq.quantize.embedding.weight, dim=-1)
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    idx = (flat @ codes.T).argmax(-1)  # nearest on the unit sphere
    q = codes[idx].view(b, g, g, d).permute(0, 3, 1, 2)
    loss = F.mse_loss(q, z.detach()) + beta * F.mse_loss(z, q.detach())
    recon = vq.decoder(vq.post_quant_conv(z + (q - z).detach()))
    return recon, loss, idx.view(b, -1), flat


def train_vq(model, arch: Arch, budget: Budget, specs, seed: int, log) -> dict:
    vq = model.model.vqmodel
    params = list(vq.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=budget.vq_lr, weight_decay=0.0)
    usage = torch.zeros(arch.codebook)
    probe = scenes(specs, budget.vq_probe_n, derive(seed, "vq_probe"), arch.image_size)  # drawings never trained on
    losses, curve, t0 = [], [], time.time()
    vq.train()
    for step in range(budget.vq_steps):
        x = pixels([im for _, im in scenes(specs, budget.vq_batch, derive(seed, "vq_batch", step), arch.image_size)])
        recon, q_loss, idx, flat = vq_forward(vq, x, budget.beta)
        loss = F.mse_loss(recon, x) + q_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        usage += torch.bincount(idx.flatten(), minlength=arch.codebook)
        if budget.vq_reseed_every and (step + 1) % budget.vq_reseed_every == 0:  # unused codes: re-seed from z
            dead = (usage == 0).nonzero().flatten()
            if len(dead):
                g = torch.Generator().manual_seed(derive(seed, "vq_dead", step))
                pick = torch.randint(len(flat), (len(dead),), generator=g)
                with torch.no_grad():
                    vq.quantize.embedding.weight[dead] = flat[pick].detach()
            usage.zero_()
        if log and ((step + 1) % 100 == 0 or step == 0):
            log(f"vq step {step + 1}/{budget.vq_steps} loss {np.mean(losses[-100:]):.4f} ({time.time() - t0:.0f} s)")
        if budget.vq_probe_every and (step + 1) % budget.vq_probe_every == 0:
            passed = vq_probe(vq, arch, probe)
            curve.append((step + 1, passed))
            vq.train()
            if log:
                log(f"vq step {step + 1}: probe reconstructions passing {passed:.2f}")
            if passed >= budget.vq_stop_pass:
                break
    vq.eval().requires_grad_(False)
    return {"seconds": time.time() - t0, "steps": step + 1, "final_loss": float(np.mean(losses[-100:])),
            "probe_curve": curve}


@torch.no_grad()
def vq_probe(vq, arch: Arch, pairs) -> float:
    """Share of `pairs`' reconstructions that fully pass the checker (eval mode)."""
    vq.eval()
    recon = to_images(vq_forward(vq, pixels([im for _, im in pairs]))[0])
    return float(np.mean([check(im, spec, size=arch.image_size).full for (spec, _), im in zip(pairs, recon)]))


@torch.no_grad()
def as_decoded(model, images: list, share: float, seed: int) -> list:
    """`images` with a seeded `share` of them replaced by their reconstruction through the model's VQ (what a
    decoded generation looks like); the rest unchanged."""
    pick = np.random.default_rng(seed).random(len(images)) < share
    if not pick.any():
        return list(images)
    recon = iter(to_images(vq_forward(model.model.vqmodel, pixels([im for im, p in zip(images, pick) if p]))[0]))
    return [next(recon) if p else im for im, p in zip(images, pick)]


# -- stage 2: understanding ------------------------------------------------------------------------------
def patch_labels(image, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Per patch of a drawn scene (grid x grid, row-major as the encoder's tokens): the palette colour and the shape
    (classified from its blob by the checker's rule) covering most of it; len(PALETTE) / len(SHAPES) = background
    when shapes cover under a tenth of the patch."""
    from scipy import ndimage

    px = np.asarray(image.convert("RGB"))
    cmap = colour_map(px, CheckOptions().colour_tol)
    smap = np.full(cmap.shape, len(SHAPES))
    for k in range(len(PALETTE)):
        labels, n = ndimage.label(cmap == k, structure=np.ones((3, 3)))
        for j in range(1, n + 1):
            ys, xs = np.nonzero(labels == j)
            rmax = np.sqrt((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2).max() + 0.5
            smap[ys, xs] = SHAPES.index(classify_shape(len(xs) / rmax**2))
    side = px.shape[0] // grid
    colours, shapes = [], []
    for r in range(grid):
        for c in range(grid):
            cp, sp = cmap[r * side:(r + 1) * side, c * side:(c + 1) * side], smap[r * side:(r + 1) * side, c * side:(c + 1) * side]
            fg = cp >= 0
            if fg.mean() < 0.1:
                colours.append(len(PALETTE))
                shapes.append(len(SHAPES))
            else:
                colours.append(int(np.bincount(cp[fg], minlength=len(PALETTE)).argmax()))
                shapes.append(int(np.bincount(sp[fg], minlength=len(SHAPES) + 1)[:len(SHAPES)].argmax()))
    return np.array(colours), np.array(shapes)


def encoder_head(arch: Arch, seed: int) -> torch.nn.Linear:
    """The linear probe of encoder pre-training: per patch, colour logits (palette + background) then shape logits."""
    torch.manual_seed(derive(seed, "enc_head"))
    return torch.nn.Linear(arch.vision_width, len(PALETTE) + 1 + len(SHAPES) + 1)


def pretrain_encoder(model, arch: Arch, budget: Budget, specs, seed: int, log, head=None, pool: Sequence = (),
                     pool_share: float = 0.0) -> dict:
    """The understanding encoder alone, with a linear probe (`head`, or a fresh encoder_head that is discarded)
    predicting every patch's colour and shape: the visual features cost no LM pass here, so the LM stage only has to
    learn to read them. `pool`: other images (e.g. the model's own drawings) that replace a seeded `pool_share` of
    each batch, labelled by the same blob rule (patch_labels) as the drawings."""
    enc = model.model.vision_model
    enc.requires_grad_(True)
    head = head if head is not None else encoder_head(arch, seed)
    params = [*enc.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=budget.enc_lr, weight_decay=0.0)
    losses, hits, t0 = [], [], time.time()
    for step in range(budget.enc_steps):
        ims = [im for _, im in scenes(specs, budget.enc_batch, derive(seed, "enc_batch", step), arch.image_size)]
        if len(pool) and pool_share:
            rng = np.random.default_rng(derive(seed, "enc_pool", step))
            ims = [pool[int(rng.integers(len(pool)))] if rng.random() < pool_share else im for im in ims]
        labels = [patch_labels(im, arch.grid) for im in ims]
        colours = torch.tensor(np.stack([c for c, _ in labels])).flatten()
        shapes = torch.tensor(np.stack([s for _, s in labels])).flatten()
        seen = as_decoded(model, ims, budget.und_through_vq, derive(seed, "enc_vq", step))
        out = head(enc(pixels(seen)).last_hidden_state).flatten(0, 1)
        c_logits, s_logits = out[:, :len(PALETTE) + 1], out[:, len(PALETTE) + 1:]
        loss = F.cross_entropy(c_logits, colours) + F.cross_entropy(s_logits, shapes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        hits.append(((c_logits.argmax(-1) == colours) & (s_logits.argmax(-1) == shapes)).float().mean().item())
        if log and ((step + 1) % 100 == 0 or step == 0):
            log(f"encoder step {step + 1}/{budget.enc_steps} loss {np.mean(losses[-100:]):.4f} "
                f"patch acc {np.mean(hits[-100:]):.3f} ({time.time() - t0:.0f} s)")
    enc.requires_grad_(False)
    return {"seconds": time.time() - t0, "final_loss": float(np.mean(losses[-100:])) if losses else None,
            "patch_accuracy": float(np.mean(hits[-100:])) if hits else None}


def align_to_words(model, processor, arch: Arch, budget: Budget, specs, seed: int, log) -> dict:
    """The aligner alone (encoder frozen, no LM pass: cheap) regressed onto word embeddings: every patch's token onto
    the LM's input embedding of " <colour>" + " <shape>" (" white" for background), so the image tokens start out as
    words the LM already reads, and the LoRA only has to learn the question logic (it learns it from text-described
    scenes in ~60 steps, docs/tiny_janus_understanding.md)."""
    tok, emb = processor.tokenizer, model.get_input_embeddings().weight.detach()

    def word(w: str) -> torch.Tensor:
        return emb[tok.encode(" " + w, add_special_tokens=False)].mean(0)

    colours = torch.stack([word(c) for c in PALETTE] + [word("white")])
    shapes = torch.stack([word(s) for s in SHAPES] + [torch.zeros_like(word("white"))])
    aligner, enc = model.model.aligner, model.model.vision_model
    aligner.requires_grad_(True)
    opt = torch.optim.AdamW(aligner.parameters(), lr=budget.align_lr, weight_decay=0.0)
    losses, t0 = [], time.time()
    for step in range(budget.align_steps):
        pairs = scenes(specs, budget.enc_batch, derive(seed, "align_batch", step), arch.image_size)
        labels = [patch_labels(im, arch.grid) for _, im in pairs]
        target = (colours[torch.tensor(np.stack([c for c, _ in labels]))]
                  + shapes[torch.tensor(np.stack([s for _, s in labels]))])
        with torch.no_grad():
            seen = as_decoded(model, [im for _, im in pairs], budget.und_through_vq, derive(seed, "align_vq", step))
            feats = enc(pixels(seen)).last_hidden_state
        loss = F.mse_loss(aligner(feats), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log and ((step + 1) % 100 == 0 or step == 0):
            log(f"aligner step {step + 1}/{budget.align_steps} loss {np.mean(losses[-100:]):.4f} ({time.time() - t0:.0f} s)")
    aligner.requires_grad_(False)
    return {"seconds": time.time() - t0, "final_loss": float(np.mean(losses[-100:])) if losses else None}


def yes_no_prompts(processor, questions) -> list[str]:
    """The prompts exactly as the t2i backend renders them for yes_probability."""
    return [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"},
                                      {"type": "text", "text": user_message(Query("q", q), YES_NO)}]}],
        add_generation_prompt=True, tokenize=False) for q in questions]


def train_understanding(model, processor, arch: Arch, budget: Budget, specs, seed: int, log) -> dict:
    """Returns (LoRA factors, stats); the LoRA is merged into `model`'s LM, the encoder + aligner train in `model`."""
    tok = processor.tokenizer
    # every single-token spelling the t2i backend sums into P(Yes) and P(No) (t2i.YES_WORDS / NO_WORDS): trained on
    # "Yes"/"No" alone, the other spellings kept most of the mass and every score read near 0 (session 8's build)
    spell = [sorted({i[0] for w in words for i in [tok.encode(w, add_special_tokens=False)] if len(i) == 1})
             for words in (NO_WORDS, YES_WORDS)]

    def two_way(lg: torch.Tensor) -> torch.Tensor:  # [B, V] -> [B, 2] log-mass of (No, Yes)
        return torch.stack([lg[:, ids].logsumexp(-1) for ids in spell], dim=-1)

    peft_model = with_lora(model, budget.und_lora_r, derive(seed, "und_lora_init")) if budget.und_lora_r else None
    for m in (model.model.vision_model, model.model.aligner):
        m.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    opt = torch.optim.AdamW([{"params": rest, "lr": budget.und_lr}, {"params": lora, "lr": budget.und_lora_lr}],
                            weight_decay=0.0)
    probe = questions_for(scenes(specs, budget.und_probe_n, derive(seed, "und_probe"), arch.image_size),
                          derive(seed, "und_probe_questions"))  # drawings never trained on
    losses, hits, curve, t0 = [], [], [], time.time()
    text_losses, text_hits, replay_losses = [], [], []

    def replay(phase: str, step: int) -> torch.Tensor | float:
        """The generation loss on fresh drawings (unconditional never: the conditioning is what erodes), so the
        LoRA learns understanding without unlearning generation; its gradient reaches only the LoRA."""
        if not budget.und_gen_replay:
            return 0.0
        pairs = scenes(specs, budget.und_gen_replay_batch, derive(seed, "und_gen_replay", phase, step), arch.image_size)
        with torch.no_grad():
            tokens = vq_forward(model.model.vqmodel, pixels([im for _, im in pairs]))[2]
        gen = generation_loss(model, processor, [s.prompt() for s, _ in pairs], tokens, [False] * len(pairs))
        replay_losses.append(gen.item())
        return budget.und_gen_replay * gen

    for step in range(budget.und_text_steps if peft_model is not None else 0):
        # warm-up on the question logic alone: the scene described in words instead of drawn (SmolLM2 answers 50%
        # of such pairs before training, 91% after 60 steps: the logic is cheap to learn where nothing is hidden)
        rows = described_pairs(scenes(specs, budget.und_batch // 2, derive(seed, "und_text_batch", step),
                                      arch.image_size),
                               derive(seed, "und_text_questions", step))
        enc = described_prompts(tok, rows)
        logits = two_way(model(**enc, position_ids=positions(enc["attention_mask"]), logits_to_keep=1).logits[:, -1])
        text_target = torch.tensor([int(a) for _, _, a in rows])
        loss = F.cross_entropy(logits.float(), text_target) + replay("text", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        text_losses.append(loss.item())
        text_hits.append(((logits[:, 1] > logits[:, 0]).long() == text_target).float().mean().item())
        done = len(text_hits) >= 3 and np.mean(text_hits[-3:]) >= budget.und_text_stop_acc
        if log and ((step + 1) % 10 == 0 or done):
            log(f"understanding text warm-up step {step + 1}/{budget.und_text_steps} loss {np.mean(text_losses[-10:]):.4f}"
                f" train acc {np.mean(text_hits[-3:]):.2f} ({time.time() - t0:.0f} s)")
        if done:
            break
    for step in range(budget.und_steps):
        if budget.und_pairs:
            pairs = scenes(specs, budget.und_batch // 2, derive(seed, "und_batch", step), arch.image_size)
            triples = paired_questions(pairs, derive(seed, "und_questions", step), arch.image_size)
        else:
            pairs = scenes(specs, budget.und_batch, derive(seed, "und_batch", step), arch.image_size)
            triples = questions_for(pairs, derive(seed, "und_questions", step))
        seen = as_decoded(model, [im for im, _, _ in triples], budget.und_through_vq, derive(seed, "und_vq", step))
        triples = [(im, q, a) for im, (_, q, a) in zip(seen, triples)]
        logits = two_way(yes_no_logits(model, processor, triples))
        target = torch.tensor([int(a) for _, _, a in triples])
        # two-way cross-entropy over (No, Yes): the introspection score reads only P(Yes) / (P(Yes) + P(No))
        loss = F.cross_entropy(logits, target) + replay("image", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        hits += ((logits[:, 1] > logits[:, 0]) == target.bool()).tolist()
        if log and ((step + 1) % 10 == 0 or step == 0):
            log(f"understanding step {step + 1}/{budget.und_steps} loss {np.mean(losses[-10:]):.4f} "
                f"train acc {np.mean(hits[-10 * budget.und_batch:]):.2f} ({time.time() - t0:.0f} s)")
        if budget.und_probe_every and (step + 1) % budget.und_probe_every == 0:
            with torch.no_grad():
                acc = float(np.mean([(lg[1] > lg[0]).item() == a for i in range(0, len(probe), budget.und_batch)
                                     for lg, (_, _, a) in zip(two_way(yes_no_logits(model, processor,
                                                                                   probe[i:i + budget.und_batch])),
                                                              probe[i:i + budget.und_batch])]))
            curve.append((step + 1, acc))
            if log:
                log(f"understanding step {step + 1}: probe yes/no accuracy {acc:.2f} ({time.time() - t0:.0f} s)")
            if acc >= budget.und_stop_acc:
                break
    lora = merged(peft_model) if peft_model is not None else {}
    model.requires_grad_(False)
    return lora, {"seconds": time.time() - t0, "steps": step + 1, "final_loss": float(np.mean(losses[-50:])),
                  "text_steps": len(text_losses),
                  "text_loss_curve": [round(float(np.mean(text_losses[i:i + 10])), 4) for i in range(0, len(text_losses), 10)],
                  "loss_curve": [round(float(np.mean(losses[i:i + 10])), 4) for i in range(0, len(losses), 10)],
                  "probe_curve": curve, "replay_steps": len(replay_losses),
                  "replay_loss_curve": [round(float(np.mean(replay_losses[i:i + 25])), 4)
                                        for i in range(0, len(replay_losses), 25)]}


def yes_no_logits(model, processor, triples) -> torch.Tensor:
    """Next-token logits [B, V] after each (image, question) prompt, rendered as the t2i backend renders it."""
    enc = processor(text=yes_no_prompts(processor, [q for _, q, _ in triples]), images=[im for im, _, _ in triples],
                    return_tensors="pt", padding=True)
    return model(**enc, position_ids=positions(enc["attention_mask"]), logits_to_keep=1).logits[:, -1].float()


# -- stage 3: generation ---------------------------------------------------------------------------------
def generation_loss(base, processor, prompts: list[str], tokens: torch.Tensor, uncond: list[bool],
                    reduction: str = "mean") -> torch.Tensor:
    """Next-image-token cross-entropy of `tokens` [B, N] after the prompts (unconditional where asked); mean, or
    per token [B, N] with reduction="none"."""
    tok = processor.tokenizer
    pad, boi = tok.pad_token_id, tok.convert_tokens_to_ids(SPECIAL["boi_token"])
    ids, mask = left_padded([image_prompt_ids(processor, p) for p in prompts], pad)
    u = unconditional(ids, mask, pad, (boi, tok.bos_token_id))
    ids = torch.where(torch.tensor(uncond)[:, None], u, ids)
    emb = torch.cat([base.get_input_embeddings()(ids), base.prepare_embeddings_for_image_generation(tokens[:, :-1])], 1)
    mask = torch.cat([mask, mask.new_ones(mask.shape[0], tokens.shape[1] - 1)], dim=1)
    hidden = base.model.language_model(inputs_embeds=emb, attention_mask=mask, position_ids=positions(mask),
                                       use_cache=False).last_hidden_state
    logits = base.model.generation_head(hidden[:, ids.shape[1] - 1:]).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), reduction=reduction).view(
        tokens.shape if reduction == "none" else ())


def train_generation(model, processor, arch: Arch, budget: Budget, specs, seed: int, log):
    """Returns (LoRA factors, stats); the LoRA is merged into `model`'s LM, the generation head trains in `model`."""
    peft_model = with_lora(model, budget.lora_r, derive(seed, "lora_init"))
    base = peft_model.get_base_model()
    heads = [base.model.generation_embeddings, base.model.generation_aligner, base.model.generation_head]
    for p in (p for m in heads for p in m.parameters()):
        p.requires_grad_(True)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=budget.gen_lr, weight_decay=0.0)
    vq = base.model.vqmodel
    losses, kls, t0 = [], [], time.time()

    def keep_text(step: int) -> torch.Tensor:
        """Mean per-token KL of the LM's next-token distribution with the LoRA from the one without, over the
        described questions (the LoRA disabled is the frozen LM: no second copy of the model)."""
        rows = described_pairs(scenes(specs, budget.gen_text_batch // 2, derive(seed, "gen_text_batch", step),
                                      arch.image_size), derive(seed, "gen_text_questions", step))
        enc = described_prompts(processor.tokenizer, rows)
        pos = positions(enc["attention_mask"])
        with torch.no_grad(), peft_model.disable_adapter():
            ref = base(**enc, position_ids=pos).logits.float().log_softmax(-1)
        cur = base(**enc, position_ids=pos).logits.float().log_softmax(-1)
        kl = (cur.exp() * (cur - ref)).sum(-1)
        kl = (kl * enc["attention_mask"]).sum() / enc["attention_mask"].sum()
        kls.append(kl.item())
        return kl
    for step in range(budget.gen_steps):
        pairs = scenes(specs, budget.gen_batch, derive(seed, "gen_batch", step), arch.image_size)
        with torch.no_grad():
            tokens = vq_forward(vq, pixels([im for _, im in pairs]))[2]
        rng = np.random.default_rng(derive(seed, "gen_uncond", step))
        gen = generation_loss(base, processor, [s.prompt() for s, _ in pairs], tokens,
                              (rng.random(len(pairs)) < budget.uncond_prob).tolist())
        loss = gen + budget.gen_text_keep * keep_text(step) if budget.gen_text_keep else gen
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(gen.item())
        if log and ((step + 1) % 50 == 0 or step == 0):
            log(f"generation step {step + 1}/{budget.gen_steps} loss {np.mean(losses[-50:]):.4f}"
                + (f" text KL {np.mean(kls[-50:]):.4f}" if kls else "") + f" ({time.time() - t0:.0f} s)")
    lora = merged(peft_model)
    model.requires_grad_(False)
    return lora, {"seconds": time.time() - t0, "final_loss": float(np.mean(losses[-50:])), "lora_modules": len(lora) // 2,
                  "text_kl_curve": [round(float(np.mean(kls[i:i + 50])), 4) for i in range(0, len(kls), 50)]}


# -- evaluation ------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(folder: Path, arch: Arch, n: int, seed: int) -> dict:
    """What ships, loaded through the t2i backend: VQ reconstructions, yes/no accuracy on test scenes, and base
    generation (guidance 5, one fixed-seed sample per prompt) checked by the pixel checker."""
    from ..backends.t2i import JanusBackend
    from ..config import ModelConfig

    backend = JanusBackend(ModelConfig(model=str(folder), device="cpu", finetune="full"), need_reference=False)
    test = split("test")
    pairs = scenes(test, n, derive(seed, "eval_scenes"), arch.image_size)
    recon = to_images(vq_forward(backend.model.model.vqmodel, pixels([im for _, im in pairs]))[0])
    vq_pass = float(np.mean([check(im, spec, size=arch.image_size).full for (spec, _), im in zip(pairs, recon)]))
    triples = questions_for(pairs + pairs, derive(seed, "eval_questions"))  # each image: a yes and a no question
    s = backend.yes_probability([im for im, _, _ in triples], [q for _, q, _ in triples])
    yes_no = float(np.mean([(p > 0.5) == a for p, (_, _, a) in zip(s, triples)]))
    specs = [test[i] for i in np.random.default_rng(derive(seed, "eval_prompts")).permutation(len(test))[:n]]
    samples = backend.generate_images([sp.prompt() for sp in specs], 1, seed=derive(seed, "eval_generation"))
    drawn = backend.decode([g[0] for g in samples])
    gen = summarize([check(im, sp, size=arch.image_size) for im, sp in zip(drawn, specs)])
    return {"vq_reconstruction_full": vq_pass, "yes_no_accuracy": yes_no, "n_yes_no": len(triples),
            "generation": {k: v for k, v in gen.items() if not np.isnan(v)}, "n": n}  # nan: no prompt of the kind


# -- the build ---------------------------------------------------------------------------------------------
def train(arch: Arch | None = None, budget: Budget | None = None, seed: int = 0, out: Path = ASSET,
          folder: Path | None = None, threads: int | None = 1, log=print) -> dict:
    """Train the three stages, save the small weights + LoRA to `out` and the card beside it; `folder`: also keep
    the assembled Janus folder there (a temporary one is used for the card otherwise)."""
    out, arch, budget = Path(out), arch or Arch(), budget or Budget()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    model, processor = build(arch, None, seed=seed)
    model.requires_grad_(False)
    specs = split("train")
    stats = {"vq": train_vq(model, arch, budget, specs, seed, log)}
    # generation before understanding: the card's yes/no accuracy (>= 85% required) then measures the LM as the
    # understanding stage left it; the generation score measures what its LoRA did to drawing
    gen_lora, stats["generation"] = train_generation(model, processor, arch, budget, specs, seed, log)
    stats["encoder"] = pretrain_encoder(model, arch, budget, specs, seed, log)
    stats["aligner"] = align_to_words(model, processor, arch, budget, specs, seed, log)
    und_lora, stats["understanding"] = train_understanding(model, processor, arch, budget, specs, seed, log)
    small = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(TRAINED_PREFIXES)}
    save_weights({**small, **stack_lora(gen_lora, und_lora)}, arch, out)
    train_seconds = time.time() - t0
    del model
    t1 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(folder) if folder else Path(tmp) / "tiny-janus"
        assemble(target, out)
        ev = evaluate(target, arch, budget.eval_n, seed)
    import transformers

    card = {"model": "tiny-janus", "architecture": {"type": "JanusForConditionalGeneration", **asdict(arch),
                                                   "language_model": "SmolLM2-135M-Instruct (frozen + merged LoRA)"},
            "training": {"seed": seed, "threads": torch.get_num_threads(), **asdict(budget), "stages": stats,
                         "data": "scenes:train (tasks/scenes.py), drawn by scenes.draw",
                         "train_seconds": round(train_seconds, 1)},
            "evaluation": {**ev, "data": "scenes:test", "eval_seconds": round(time.time() - t1, 1)},
            "weights_file": out.name, "weights_bytes": out.stat().st_size,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "torch": torch.__version__,
            "transformers": transformers.__version__}
    card_path = out.with_name(CARD_NAME if out == ASSET else out.stem + "_card.json")
    tmp_card = card_path.with_name(card_path.name + ".tmp")
    tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp_card, card_path)
    if log:
        log(f"wrote {out} and {card_path}: {json.dumps(card['evaluation'])}")
    return card
