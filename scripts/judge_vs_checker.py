"""How well does the Meta-TTRL judge read the model's OWN drawings? For a run folder's base images, the judge's
s = P(Yes) / (P(Yes) + P(No)) on each rule-rubric question against the pixel checker's answer to the same
question (never seen by any reward): ROC AUC per question kind (object present, its colour, its count, the
relation), and the same on clean drawings of the same specs and on their VQ reconstructions (truth from the
reconstruction, and from the clean drawing it came from) for reference; then
what the checker finds in the drawings (blobs per shape, specks). An AUC near 0.5 means the reward carries no
signal, as the checker counts it, for that kind on the images it is actually given.

    PYTHONPATH=src python scripts/judge_vs_checker.py RUN_FOLDER [--judge tiny-janus] [--panel OUT.png]

`--panel` also draws every 7th drawing (8 of them) with the checker's blobs and the judge's P(yes) to "Is there a
circle / square / triangle?" under it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from ttrl.backends.t2i import JanusBackend
from ttrl.config import ModelConfig
from ttrl.rubric import rule_rubric
from ttrl.scenes import DrawOptions, check_blobs, draw, find_blobs
from ttrl.tasks.scenes import split
from ttrl.zoo import resolve_model
from ttrl.zoo.tiny_janus_train import as_decoded, changed


def truths(spec, blobs, side: int) -> list[tuple[str, bool]]:
    """(kind, answer) of each rule-rubric question, in rule_rubric's order (object by object, then the relation)."""
    out = []
    for t in spec.things:
        same = [b for b in blobs if b.shape == t.shape]
        out.append(("present", bool(same)))
        out.append(("colour", any(b.colour == t.colour for b in same)))
        if t.count > 1:
            out.append(("count", sum(b.colour == t.colour for b in same) == t.count))
    if spec.relation:
        out.append(("relation", check_blobs(blobs, spec, side).categories["position"]))
    return out


def auc_rows(backend, images, specs, seed: int = 0, truth_from=None) -> dict:
    """Each image is asked its own prompt's rubric and the rubric of the prompt with one attribute changed
    (tiny-janus' `changed`), so clean drawings get "no" questions too; truth is the checker's, from the pixels of
    the image itself or of `truth_from` (e.g. the clean drawing a reconstruction came from)."""
    rng = np.random.default_rng(seed)
    qs, kinds, truth, pics = [], [], [], []
    for im, spec, src in zip(images, specs, truth_from or images):
        blobs = find_blobs(src)
        for sp in (spec, changed(spec, rng)):
            rubric, tr = rule_rubric(sp.prompt()), truths(sp, blobs, im.size[0])
            if len(rubric) != len(tr):  # the rubric merged two objects of one shape: skip it
                continue
            for q, (k, a) in zip(rubric, tr):
                pics.append(im)
                qs.append(q)
                kinds.append(k)
                truth.append(a)
    s = np.array(backend.yes_probability(pics, qs))
    kinds, truth = np.array(kinds), np.array(truth)
    row = {}
    for k in ("present", "colour", "count", "relation"):
        m = kinds == k
        if m.sum() and 0 < truth[m].mean() < 1:
            row[k] = {"auc": round(float(roc_auc_score(truth[m], s[m])), 3), "n": int(m.sum()),
                      "true_share": round(float(truth[m].mean()), 3),
                      "accuracy": round(float(((s[m] > 0.5) == truth[m]).mean()), 3)}
    return row


def panel(backend, files: list[Path], out: Path, side: int = 300) -> None:
    from PIL import ImageDraw

    files = files[::7][:8]
    ims = [Image.open(f).convert("RGB") for f in files]
    shapes = ("circle", "square", "triangle")
    p = np.array(backend.yes_probability([im for im in ims for _ in shapes],
                                         [f"Is there a {s}?" for _ in ims for s in shapes])).reshape(-1, 3)
    canvas = Image.new("RGB", (side * 4, (side + 40) * 2), "white")
    d = ImageDraw.Draw(canvas)
    for k, (im, f) in enumerate(zip(ims, files)):
        x, y = (k % 4) * side, (k // 4) * (side + 40)
        canvas.paste(im.resize((side - 20, side - 20), Image.NEAREST), (x + 10, y))
        blobs = ", ".join(f"{b.colour} {b.shape}" for b in find_blobs(im))
        d.text((x + 10, y + side - 18), f"{f.stem} checker: {blobs}"[:62], fill="black")
        d.text((x + 10, y + side - 4), "judge P(yes): " + " ".join(f"{s[:3]} {q:.2f}" for s, q in zip(shapes, p[k])),
               fill="blue")
    canvas.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a text-to-image run folder (images/base/*.png, predictions)")
    ap.add_argument("--judge", default="tiny-janus", help="the introspector: tiny-janus or a Janus folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--panel", type=Path, help="also save a picture of drawings, checker blobs and judge answers")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    backend = JanusBackend(ModelConfig(model=str(resolve_model(a.judge)), device="cpu", finetune="full"),
                           need_reference=False)
    test = split("test")
    files = sorted((a.run / "images" / "base").glob("*.png"))
    specs = [test[int(f.stem.rsplit("_", 1)[0].rsplit("-", 1)[1])] for f in files]
    drawn = [Image.open(f).convert("RGB") for f in files]
    size = drawn[0].size[0]
    clean = [draw(sp, seed=i, opts=DrawOptions(size=size)) for i, sp in enumerate(specs)]
    print(json.dumps({"images": "drawn by the model (base)", "n": len(files), **auc_rows(backend, drawn, specs)}))
    recon = as_decoded(backend.model, clean, 1.0, seed=0)
    print(json.dumps({"images": "clean drawings of the same specs", **auc_rows(backend, clean, specs)}))
    print(json.dumps({"images": "their VQ reconstructions", **auc_rows(backend, recon, specs)}))
    print(json.dumps({"images": "their VQ reconstructions, truth from the clean drawing",
                      **auc_rows(backend, recon, specs, truth_from=clean)}))
    blobs = [b for im in drawn for b in find_blobs(im)]
    print(json.dumps({"checker's blobs in the drawings": len(blobs),
                      **{s: sum(b.shape == s for b in blobs) for s in ("circle", "square", "triangle")},
                      "under 40 px (the smallest drawn triangle)": sum(b.area < 40 for b in blobs)}))
    if a.panel:
        panel(backend, files, a.panel)


if __name__ == "__main__":
    main()
