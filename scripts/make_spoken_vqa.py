"""Build the shipped spoken easy-vqa set: easy-vqa images with the question SPOKEN, from a seed.

Closed items: an easy-vqa question (colour, shape or yes/no) rendered as speech; the answer is easy-vqa's word.
Open-ended items: a spoken request to describe the image ("Describe what you see.", ...); the reference is a
sentence built from the scene's colour and shape, both read off easy-vqa's own questions about that image
(a colour question, a shape question, or yes/no questions answered yes). Images are not copied: items name an
easy-vqa image by split and id, and the task (ttrl.tasks.easy_vqa_spoken) finds it in the easy-vqa wheel.
Voices: espeak-ng English accents and variants at several speaking rates (Debian `apt-get install -y espeak-ng`;
only this script needs it), rendered and trimmed as scripts/make_speech_data.py does.
Audio: 16 kHz mono Ogg Opus at libsndfile compression level 0.97 (about 3.5 KB a question). Whisper base's
greedy WER on 40 of the test questions, the same renderings: 36.8% as wav, 38.1% / 34.3% / 36.8% / 65.3% at
levels 0.9 / 0.95 / 0.97 / 1.0 (level 1.0 halves the size but the words no longer come through).

    python scripts/make_spoken_vqa.py                  # rebuild src/ttrl/tasks/assets/easyvqa_spoken/
    python scripts/make_spoken_vqa.py --out /tmp/sv --closed 10 --open 4
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from make_speech_data import SR, speak, write_opus  # the same rendering as the speech set

OUT = Path(__file__).resolve().parents[1] / "src" / "ttrl" / "tasks" / "assets" / "easyvqa_spoken"
PROMPT = "Answer the spoken question about the image."
# espeak-ng's English accents (gmw/ voices, shipped with Debian's espeak-ng) with some of its voice variants
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us+f2", "en-us+m3", "en-gb+f3")
RATES = (130, 145, 160, 175)  # words per minute (espeak-ng's default is 175)
OPEN_QUESTIONS = ("Describe what you see.", "What do you see in this picture?", "Describe the image.",
                  "Tell me what is in the image.")
COLORS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
SHAPES = ("circle", "rectangle", "triangle")


def reference(color: str, shape: str) -> str:
    """The open-ended items' reference description."""
    return f"The image shows a {color} {shape}."


def scenes(questions, answers, image_ids) -> dict[int, dict[str, str]]:
    """Per image, its colour and shape as easy-vqa's own questions about it state them."""
    facts: dict[int, dict[str, str]] = {}
    for q, a, i in zip(questions, answers, image_ids):
        f = facts.setdefault(i, {})
        found = {}
        if a in COLORS:
            found["color"] = a
        elif a in SHAPES:
            found["shape"] = a
        elif a in ("yes", "no"):
            negated = bool(re.search(r"\b(not|no)\b", q))
            if (a == "yes") != negated:  # the scene has what the question names
                for word in re.findall(r"[a-z]+", q):
                    if word in COLORS:
                        found["color"] = word
                    elif word in SHAPES:
                        found["shape"] = word
        for key, value in found.items():
            if f.setdefault(key, value) != value:
                raise SystemExit(f"easy-vqa image {i}: {key} {f[key]!r} and {value!r} ({q!r})")
    return {i: f for i, f in facts.items() if "color" in f and "shape" in f}


def build(out: Path, seed: int, closed: dict[str, int], open_: dict[str, int], compression: float) -> None:
    import easy_vqa

    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent if out.parent.exists() else None))
    records = []
    for split in ("test", "train"):
        questions, answers, image_ids = (easy_vqa.get_test_questions() if split == "test"
                                         else easy_vqa.get_train_questions())
        (tmp / split).mkdir()
        known = scenes(questions, answers, image_ids)
        picks = [("closed", int(k)) for k in np.sort(rng.permutation(len(questions))[:closed[split]])]
        images = sorted(known)
        picks += [("open", int(i)) for i in np.sort(rng.permutation(images)[:open_[split]])]
        for n, (kind, k) in enumerate(picks):
            voice, rate = str(rng.choice(VOICES)), int(rng.choice(RATES))
            if kind == "closed":
                spoken, answer, image = questions[k], answers[k], int(image_ids[k])
                extra = {}
            else:
                image, f = k, known[k]
                spoken, answer = str(rng.choice(OPEN_QUESTIONS)), reference(f["color"], f["shape"])
                extra = {"color": f["color"], "shape": f["shape"]}
            rel = f"{split}/{n:03d}.opus"
            write_opus(tmp / rel, speak(spoken, "espeak-ng", voice, rate), compression)
            records.append({"id": f"{split}-{kind}-{n:03d}", "split": split, "kind": kind, "prompt": PROMPT,
                            "audio": rel, "image_id": image, "spoken": spoken, "answer": answer,
                            "voice": f"espeak-ng:{voice}", "rate": rate, **extra})
    with open(tmp / "manifest.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    info = {"seed": seed, "closed": closed, "open": open_, "sample_rate": SR, "codec": "ogg/opus",
            "compression_level": compression, "voices": list(VOICES), "rates_wpm": list(RATES),
            "open_questions": list(OPEN_QUESTIONS), "reference": reference("COLOR", "SHAPE"),
            "source": "easy-vqa (the easy_vqa wheel: questions, answers, images); espeak-ng (Debian)"}
    (tmp / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{len(records)} spoken items, {size / 1e6:.2f} MB -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--closed", type=int, nargs=2, default=(200, 300), metavar=("TEST", "TRAIN"),
                    help="closed (one-word) items per split")
    ap.add_argument("--open", type=int, nargs=2, default=(100, 100), metavar=("TEST", "TRAIN"),
                    help="open-ended (describe the image) items per split")
    ap.add_argument("--compression", type=float, default=0.97,
                    help="libsndfile Opus compression level 0..1 (0.97: as intelligible as wav to Whisper base)")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build(args.out, args.seed, dict(zip(("test", "train"), args.closed)), dict(zip(("test", "train"), args.open)),
          args.compression)


if __name__ == "__main__":
    main()
