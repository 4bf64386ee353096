"""The shipped spoken easy-vqa set (easyvqa-spoken:test / :train): closed and open-ended items carry an easy-vqa
image and a decodable 16 kHz clip together, answers and references agree with easy-vqa's own labels, voices and
rates vary, the set stays small, the open-ended scorer, and the build script is deterministic."""
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ttrl.data import DataError, Item, Query, read_jsonl
from ttrl.media import load_audio
from ttrl.tasks import load_dataset
from ttrl.tasks.easy_vqa_spoken import ASSETS, names_scene

ROOT = Path(__file__).resolve().parents[1]
EASY_VQA_ANSWERS = {"black", "blue", "brown", "circle", "gray", "green", "no", "rectangle", "red", "teal", "triangle",
                    "yellow", "yes"}


@pytest.mark.parametrize("split,closed,open_", [("test", 200, 100), ("train", 300, 100)])
def test_items_carry_image_and_clip_with_easy_vqa_labels(split, closed, open_):
    import easy_vqa

    questions, answers, image_ids = (easy_vqa.get_test_questions() if split == "test" else
                                     easy_vqa.get_train_questions())
    paths = easy_vqa.get_test_image_paths() if split == "test" else easy_vqa.get_train_image_paths()
    asked = {(q, paths[i]): a for q, a, i in zip(questions, answers, image_ids)}
    c = load_dataset(f"easyvqa-spoken:{split}", {"kind": "closed"}, 0, 0)
    o = load_dataset(f"easyvqa-spoken:{split}", {"kind": "open"}, 0, 0)
    assert (len(c.items), len(o.items)) == (closed, open_) and (c.answer_type, o.answer_type) == ("label", "text")
    for it in c.items + o.items:
        assert it.query.modalities == {"image", "audio"} and Path(it.query.images[0]).is_file()
        assert "spoken" in it.query.prompt and it.meta["spoken"] not in it.query.prompt  # the question is heard only
    for it in c.items:  # the spoken question and its answer are easy-vqa's, for that image
        assert asked[(it.meta["spoken"], it.query.images[0])] == it.answer and it.answer in EASY_VQA_ANSWERS
    for it in o.items:  # the reference names the scene as easy-vqa's own answers about that image state it
        facts = {a for (q, p), a in asked.items() if p == it.query.images[0] and not q.startswith(("is", "does"))}
        assert facts <= {it.meta["color"], it.meta["shape"]}
        assert it.answer == f"The image shows a {it.meta['color']} {it.meta['shape']}."
    assert len(Counter(it.answer for it in c.items)) >= 10  # colour, shape and yes/no questions


def test_clips_decode_and_vary():
    items = load_dataset("easyvqa-spoken:test", {"kind": "closed"}, 40, 0).items
    items += load_dataset("easyvqa-spoken:test", {"kind": "open"}, 20, 0).items
    for it in items:
        info = sf.info(it.query.audio[0])
        assert info.samplerate == 16000 and info.channels == 1 and 0.5 < info.duration < 5
        assert len(load_audio(it.query.audio[0])) > 8000
    assert len({it.meta["voice"] for it in items}) >= 5 and len({it.meta["rate"] for it in items}) >= 3
    assert len({it.meta["spoken"] for it in items if it.meta.get("color")}) >= 3  # rephrased open questions
    size = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert size < 3e6, f"shipped set is {size / 1e6:.1f} MB"


def test_seeded_subsets_and_bad_args():
    a = load_dataset("easyvqa-spoken:test", {"kind": "open", "sample_seed": 3}, 10, 0)
    b = load_dataset("easyvqa-spoken:test", {"kind": "open", "sample_seed": 3}, 10, 7)
    assert [it.query.id for it in a.items] == [it.query.id for it in b.items]
    with pytest.raises(DataError, match="kind"):
        load_dataset("easyvqa-spoken:test", {"kind": "both"}, 5, 0)
    with pytest.raises(DataError, match="split"):
        load_dataset("easyvqa-spoken:dev", {}, 5, 0)


def test_open_scorer_needs_colour_and_shape():
    it = Item(Query("x", "p"), "The image shows a gray circle.", {"color": "gray", "shape": "circle"})
    assert names_scene("a grey circle on white", it) and names_scene("Circle. It is gray.", it)
    assert not names_scene("a gray triangle", it) and not names_scene("a circle", it) and not names_scene(None, it)
    assert not names_scene("a grayish circles", it)  # whole words only


def test_jsonl_takes_audio_and_image_together(tmp_path):
    f = tmp_path / "av.jsonl"
    f.write_text(json.dumps({"prompt": "Answer the spoken question.", "audio": "q.opus",
                             "image": ["f0.png", "f1.png"], "answer": "red"}) + "\n")
    q = read_jsonl(f)[0].query
    assert q.audio == (str(tmp_path / "q.opus"),) and q.images == (str(tmp_path / "f0.png"), str(tmp_path / "f1.png"))
    assert q.modalities == {"image", "audio"}


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="the build script needs espeak-ng (Debian package)")
def test_build_script_is_deterministic(tmp_path):
    def build(out):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_spoken_vqa.py"), "--out", str(out),
                        "--closed", "3", "2", "--open", "2", "1"], check=True, capture_output=True)
        return out

    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
    files = sorted(p.relative_to(a) for p in a.rglob("*.opus"))
    assert len(files) == 8  # the same decoded samples (an Ogg stream's serial number is random, so not the same bytes)
    assert all(np.array_equal(sf.read(a / f)[0], sf.read(b / f)[0]) for f in files)
