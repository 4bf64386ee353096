"""The transductive protocol for text-to-image (Meta-TTRL): evaluate the base model's images of every evaluation
prompt with the pixel checker, adapt on the cohort (G images per prompt, rewarded by the rubric), evaluate again
with the same seeds, and keep every image plus a before/after grid in the run folder.

The evaluation is GenEval-style (scenes.summarize: share of images fully satisfying their prompt, and per
category). It reads each item's spec (Item.meta, next to labels); no reward or update sees it: the trainer is typed
on Query, which has no spec field (tests/test_meta_ttrl_run.py changes every spec and compares).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..image_trainer import safe_name
from ..scenes import CATEGORIES, SceneSpec, check, check_blobs, find_blobs
from ..seeds import derive
from .common import Adaptation
from .transductive import adapt_epochs

GRID_CELL = 96  # pixels per image in grid.png (tiny-janus draws 64x64)
GRID_ROWS = 24  # prompts shown in grid.png


def eval_images(sess, phase: str) -> list[dict]:
    """One row per evaluation prompt: its images (PNG paths relative to the run folder) and the checker's verdict on each. The seeds depend on
    the prompt's position only, so base and adapted images differ by the weights alone. Rows already in
    PHASE.jsonl (a resumed run) are kept."""
    cfg, out, policy = sess.cfg, sess.out, sess.policy
    name = "base.jsonl" if phase == "base" else "predictions.jsonl"
    done = {r["id"] for r in out.read(name)}
    folder = Path(out.path) / "images" / phase
    folder.mkdir(parents=True, exist_ok=True)
    items, bs = sess.eval_items, max(1, cfg.image.image_batch_size // cfg.image.eval_images)
    for start in range(0, len(items), bs):
        chunk = [it for it in items[start:start + bs]]
        if all(it.query.id in done for it in chunk):
            continue
        groups = policy.generate_images([it.query.prompt for it in chunk], cfg.image.eval_images,
                                        seed=derive(cfg.run.seed, "eval_images", start), greedy=cfg.image.eval_greedy)
        for it, samples in zip(chunk, groups):
            if it.query.id in done:
                continue
            paths, checks = [], []
            spec = SceneSpec.from_dict(it.meta["spec"]) if it.meta.get("spec") else None
            for k, im in enumerate(policy.decode(samples)):
                path = folder / f"{safe_name(it.query.id)}_{k}.png"
                im.save(path)
                paths.append(str(path.relative_to(out.path)))  # relative: the run folder may move
                if spec is not None:
                    c = check(im, spec, size=im.size[0])
                    checks.append({**c.categories, "full": c.full})
            out.append(name, {"id": it.query.id, "prompt": it.query.prompt, "phase": phase, "images": paths,
                              "checks": checks if spec is not None else None})
    return out.read(name)


def _shares(rows: list[dict]) -> dict[str, float]:
    """GenEval-style shares over every checked image of these rows (scenes.summarize's keys)."""
    checks = [c for r in rows for c in (r["checks"] or [])]
    return {**_reduce(checks), "n_images": len(checks)}


def _reduce(checks: list[dict]) -> dict[str, float]:
    """full and per-category shares of checker verdicts ({category: bool, "full": bool}); None where none apply."""
    out = {"full": float(np.mean([c["full"] for c in checks])) if checks else None}
    for cat in CATEGORIES:
        vals = [c[cat] for c in checks if cat in c]
        out[cat] = float(np.mean(vals)) if vals else None
    return out


def _blind_shares(rows: list[dict], specs: dict[str, SceneSpec], run_dir: Path) -> dict[str, float]:
    """The same shares with every image checked against every OTHER evaluation prompt's spec: what a drawing
    scores whatever it was asked for (the checker's chance level for these drawings). A reward can raise the shares
    without following prompts, e.g. by drawing more colours (docs/meta_ttrl.md, session 19); the gap to this is what
    the prompt itself bought."""
    from PIL import Image

    checks = []
    for r in (r for r in rows if r["id"] in specs):
        for path in r["images"]:
            with Image.open(Path(run_dir) / path) as im:
                blobs, side = find_blobs(im.convert("RGB")), im.size[0]
            checks += [{**(c := check_blobs(blobs, spec, side)).categories, "full": c.full}
                       for other, spec in specs.items() if other != r["id"]]
    return _reduce(checks)


def write_grid(base: list[dict], adapted: list[dict], run_dir: Path) -> None:
    """grid.png: per prompt (up to GRID_ROWS), its first base image and first adapted image, with the prompt and the
    checker's verdict (full: yes / no) under each."""
    from PIL import Image, ImageDraw

    by_id = {r["id"]: r for r in adapted}
    rows = [(b, by_id[b["id"]]) for b in base if b["id"] in by_id][:GRID_ROWS]
    label_w, text_h = 260, 14
    grid = Image.new("RGB", (label_w + 2 * GRID_CELL, text_h + len(rows) * GRID_CELL), "white")
    d = ImageDraw.Draw(grid)
    d.text((label_w, 1), "base", fill="black")
    d.text((label_w + GRID_CELL, 1), "adapted", fill="black")
    for i, (b, a) in enumerate(rows):
        y = text_h + i * GRID_CELL
        d.text((4, y + GRID_CELL // 2 - 6), b["prompt"][:42], fill="black")
        for j, r in enumerate((b, a)):
            with Image.open(run_dir / r["images"][0]) as im:
                grid.paste(im.convert("RGB").resize((GRID_CELL, GRID_CELL), Image.NEAREST), (label_w + j * GRID_CELL, y))
            if r["checks"]:
                ok = r["checks"][0]["full"]
                d.rectangle([label_w + j * GRID_CELL, y, label_w + (j + 1) * GRID_CELL - 1, y + GRID_CELL - 1],
                            outline="green" if ok else "red")
    grid.save(run_dir / "grid.png")


def run_image_transductive(sess) -> dict:
    cfg, out = sess.cfg, sess.out
    t0 = time.perf_counter()
    adaptation = Adaptation(sess)
    progress = adaptation.resume({"epoch": 0, "pos": 0})

    base = eval_images(sess, "base") if cfg.protocol.base_eval else []

    seen = {r["id"] for r in out.read("rubrics.jsonl")}
    wanted = cfg.reward.reward_params.get("meta_ttrl", {}).get("rubric", "self")

    def log_rubrics() -> None:  # each prompt's rubric once, and the rule-based fallback as an event
        for qid, r in sess.trainer.ctx.state.get("meta_ttrl", {}).items():
            if qid in seen:
                continue
            seen.add(qid)
            out.append("rubrics.jsonl", {"id": qid, "step": sess.trainer.steps, **r})
            if r["source"] == "rule" and wanted != "rule":
                adaptation.event("rubric_fallback", "the introspector's rubric did not parse; rule-based rubric used",
                                 item=qid)

    adapt_epochs(sess, adaptation, progress, after_step=log_rubrics)
    adapted = eval_images(sess, "adapted")
    if base:
        write_grid(base, adapted, Path(out.path))

    ids = {it.query.id for it in sess.adapt_items}
    specs = {it.query.id: SceneSpec.from_dict(it.meta["spec"]) for it in sess.eval_items if it.meta.get("spec")}
    summary = {}
    for phase, rows in (("base", base), ("adapted", adapted)):
        if not rows:
            continue
        shares = _shares(rows)
        summary[f"{phase}_accuracy"] = shares["full"]  # GenEval's overall score: images fully satisfying the prompt
        summary.update({f"{phase}_{k}": v for k, v in shares.items() if k != "full"})
        if len(specs) > 1:
            blind = _blind_shares(rows, specs, Path(out.path))
            summary.update({f"{phase}_blind_{'accuracy' if k == 'full' else k}": v for k, v in blind.items()})
        for part, keep in (("adapted_items", lambda r: r["id"] in ids), ("other_items", lambda r: r["id"] not in ids)):
            sub = [r for r in rows if keep(r)]
            summary[f"{part}_{phase}_accuracy"] = _shares(sub)["full"]
            summary[f"n_{part}"] = len(sub)
    summary.setdefault("base_accuracy", None)
    summary.update({"n_adapt": len(sess.adapt_items), "n_eval": len(sess.eval_items), "steps": sess.trainer.steps,
                    "rubrics_rule": sum(r["source"] == "rule" for r in out.read("rubrics.jsonl")),
                    "rubrics": len(out.read("rubrics.jsonl")), "introspector": cfg.image.introspector or "self",
                    **adaptation.summary(), "seconds_protocol": time.perf_counter() - t0})
    return summary
