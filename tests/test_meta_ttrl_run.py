"""Meta-TTRL end to end through the CLI on a tiny random Janus (tests/test_t2i.py's folder): G images per prompt,
the rubric once per prompt (the random model's does not parse: the rule-based fallback, logged as an event),
rewards from P(Yes), one GRPO step over image tokens, the pixel checker before and after, images and grid.png in
the run folder; scene specs never reach a reward or an update; an external introspector replaces the self-judge."""
import json

import pytest
import torch
from test_t2i import build_tiny_janus

from ttrl.cli import main
from ttrl.scenes import find_blobs
from ttrl.tasks.scenes import split

pytestmark = pytest.mark.slow  # each run loads the tiny model and SmolLM2's tokenizer (~10 s)

TINY = ["--n-votes", "2", "--n-train", "2", "--epochs", "1", "--prompts-per-step", "2", "--adapt-size", "2",
        "--lora-r", "4", "--lora-alpha", "8", "--device", "cpu", "--meta-ttrl-rubric-tokens", "6", "--report", "false",
        "--reward", "meta_ttrl", "--protocol", "transductive"]


@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(build_tiny_janus(tmp_path_factory.mktemp("tiny-janus")))


def _run(model, data, out, *extra):
    assert main(["run", "-m", model, "--data", data, "--out", str(out), *TINY, *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def _rows(out, name):
    return [json.loads(x) for x in (out / name).read_text().splitlines() if x.strip()]


def test_cli_meta_ttrl_run(janus_dir, tmp_path):
    out = tmp_path / "run"
    s = _run(janus_dir, "scenes:test", out, "--task-size", "2", "--guidance-scale", "3", "--image-temperature", "0.9")
    # the image options reached the backend through the config
    cfg = (out / "config.yaml").read_text()
    assert "guidance_scale: 3.0" in cfg and "image_temperature: 0.9" in cfg
    # one GRPO step over both prompts' image tokens (2 images x 16 tokens each)
    (m,) = _rows(out, "metrics.jsonl")
    assert m["step"] == 1 and m["groups_trained"] == 2 and m["tokens"] == 64 and m["grad_norm"] > 0
    assert 0 < m["reward_mean"] < 1 and m["reward/rubric_rule"] == 1.0
    # the rubric once per prompt; the rule-based fallback is an event
    rubrics = _rows(out, "rubrics.jsonl")
    assert len(rubrics) == 2 and all(r["source"] == "rule" and r["questions"] for r in rubrics)
    assert [e["event"] for e in _rows(out, "events.jsonl")] == ["rubric_fallback"] * 2
    # every image is kept: rollouts, base and adapted evaluation images, and the grid
    assert len(list((out / "images" / "adapt" / "step0001").glob("*.png"))) == 4
    for phase, name in (("base", "base.jsonl"), ("adapted", "predictions.jsonl")):
        rows = _rows(out, name)
        assert len(rows) == 2 and all(r["phase"] == phase for r in rows)
        for r in rows:
            assert (out / r["images"][0]).is_file() and set(r["checks"][0]) >= {"colour", "shape", "binding", "full"}
    assert (out / "grid.png").is_file()
    # GenEval-style shares before and after, per category, split by adapted / other prompts
    assert s["steps"] == 1 and s["updates"] == 1 and s["n_eval"] == 2 and s["introspector"] == "self"
    for key in ("base_accuracy", "adapted_accuracy", "base_colour", "adapted_shape", "adapted_binding",
                "base_blind_accuracy", "adapted_blind_colour"):  # blind: each image against the other prompt
        assert 0 <= s[key] <= 1
    assert s["n_adapted_items"] == 2 and s["events_rubric_fallback"] == 2
    # a finished run resumes to its own summary (the image report), writing nothing
    assert main(["run", "--resume", str(out)]) == 0
    assert len(_rows(out, "predictions.jsonl")) == 2


def _scenes_file(path, specs):
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": prompt, "spec": spec}) + "\n"
                            for i, (prompt, spec) in enumerate(specs)))
    return str(path)


def test_specs_reach_only_the_checker(janus_dir, tmp_path):
    """Every spec changed: rewards, rubrics, the update and every image are identical; only the checker differs."""
    scenes = split("test")[:2]
    a = tmp_path / "a"
    _run(janus_dir, _scenes_file(tmp_path / "a.jsonl", [(sp.prompt(), sp.to_dict()) for sp in scenes]), a)
    # B's specs: one object per prompt, read from the largest blob of A's base image (so the colour check passes)
    changed = []
    for sp, row in zip(scenes, _rows(a, "base.jsonl")):
        blobs = find_blobs(_open(a / row["images"][0]))
        assert blobs, "the random model's image has no coloured blob to build a spec from"
        blob = blobs[0]
        new = {"objects": [{"shape": blob.shape, "colour": blob.colour, "count": 1}], "relation": None}
        assert new != sp.to_dict()
        changed.append((sp.prompt(), new))
    b = tmp_path / "b"
    _run(janus_dir, _scenes_file(tmp_path / "b.jsonl", changed), b)

    drop = ("seconds", "seconds_sample", "seconds_reward", "seconds_update")
    assert [{k: v for k, v in r.items() if k not in drop} for r in _rows(a, "metrics.jsonl")] == \
        [{k: v for k, v in r.items() if k not in drop} for r in _rows(b, "metrics.jsonl")]
    assert _rows(a, "rubrics.jsonl") == _rows(b, "rubrics.jsonl")
    wa = torch.load(a / "checkpoint.pt", weights_only=False).trainer.weights
    wb = torch.load(b / "checkpoint.pt", weights_only=False).trainer.weights
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    images = sorted(p.relative_to(a) for p in (a / "images").rglob("*.png"))
    assert images == sorted(p.relative_to(b) for p in (b / "images").rglob("*.png"))
    assert all((a / p).read_bytes() == (b / p).read_bytes() for p in images)
    # the checker read the new specs: every base image now has its spec's colour
    assert not all(r["checks"][0]["colour"] for r in _rows(a, "base.jsonl"))
    assert all(r["checks"][0]["colour"] for r in _rows(b, "base.jsonl"))


def _open(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def test_external_introspector(janus_dir, tmp_path):
    judge = str(build_tiny_janus(tmp_path / "judge", seed=1))
    data = ["--task-size", "2"]
    own, ext = tmp_path / "self", tmp_path / "external"
    _run(janus_dir, "scenes:test", own, *data)
    s = _run(janus_dir, "scenes:test", ext, *data, "--introspector", judge)
    assert s["introspector"] == judge
    # same policy, same images; a different judge, so different rewards
    assert (own / "images/adapt/step0001").exists()
    for p in sorted((own / "images" / "adapt").rglob("*.png")):
        assert p.read_bytes() == (ext / p.relative_to(own)).read_bytes()
    r_own, r_ext = _rows(own, "metrics.jsonl")[0], _rows(ext, "metrics.jsonl")[0]
    assert r_own["reward/yes_share_mean"] != pytest.approx(r_ext["reward/yes_share_mean"], abs=1e-6)
    # a model that cannot judge images is refused before any work, naming the option
    bad = main(["run", "-m", janus_dir, "--data", "scenes:test", "--out", str(tmp_path / "bad"), *TINY, *data,
                "--introspector", "smollm2-135m"])
    assert bad == 2
