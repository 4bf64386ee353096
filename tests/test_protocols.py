"""Online and episodic protocols, safeguards firing in real runs, and kill-and-resume, on the real model."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ttrl.cli import main

pytestmark = pytest.mark.slow

SMALL = ["--answer-type", "number", "--n-votes", "4", "--n-train", "4", "--max-new-tokens", "16", "--eval-max-new-tokens", "16", "--seed", "2"]


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def stream_file(tmp_path, bad_line=True):
    lines = [json.dumps({"id": "q0", "prompt": "Calculate 3 + 4.", "answer": 7})]
    if bad_line:
        lines.append('{"prompt": "Calculate 1 + 1.", "answer": 2')  # torn JSON
    lines += [json.dumps({"id": "q1", "prompt": "Calculate 12 + 5.", "answer": 17}),
              json.dumps({"id": "q2", "prompt": "Calculate 6 + 2.", "answer": 8})]
    p = tmp_path / "stream.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_online_answers_then_adapts_and_survives_a_bad_line(tmp_path):
    out = tmp_path / "online"
    assert main(["run", "--protocol", "online", "--data", str(stream_file(tmp_path)), "--out", str(out), *SMALL]) == 0
    preds = jsonl(out / "predictions.jsonl")
    assert [p["id"] for p in preds] == ["q0", "q1", "q2"]
    assert [p["step"] for p in preds] == [0, 1, 2]  # each answer given before adapting on that item
    (bad,) = [e for e in jsonl(out / "events.jsonl") if e["event"] == "bad_input"]
    assert "stream.jsonl, line 2" in bad["reason"]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_items"] == 3 and s["steps"] == 3 and s["online_accuracy"] == sum(p["correct"] for p in preds) / 3


def test_episodic_resets_to_the_base_adapter(tmp_path):
    out = tmp_path / "episodic"
    args = ["run", "--protocol", "episodic", "--data", str(stream_file(tmp_path, bad_line=False)),
            "--out", str(out), "--lr", "1e-3", *SMALL]
    assert main(args) == 0
    resets = jsonl(out / "resets.jsonl")
    assert [r["index"] for r in resets] == [0, 1, 2]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_resets"] == 3 and s["reset_seconds_mean"] < 0.5  # a LoRA reset is a small copy
    weights = torch.load(out / "checkpoint.pt", weights_only=False).trainer.weights
    lora_b = [w for n, w in weights.items() if "lora_B" in n]
    assert lora_b and all((w == 0).all() for w in lora_b)  # back to the fresh adapter (B = 0)


def transductive(out, *extra):
    return ["run", "--task-size", "6", "--adapt-size", "4", "--epochs", "2", "--prompts-per-step", "1",
            "--base-maj-votes", "2", "--out", str(out), *SMALL, *extra]


def test_gate_and_budget_fire_and_are_logged(tmp_path):
    out = tmp_path / "gated"
    assert main(transductive(out, "--gate-min-majority", "1.01", "--max-steps", "2")) == 0
    metrics, events = jsonl(out / "metrics.jsonl"), jsonl(out / "events.jsonl")
    assert len(metrics) == 2 and all(m["groups_trained"] == 0 and m["groups_gated"] == 1 for m in metrics)
    assert [e["event"] for e in events] == ["gate", "gate", "budget"]
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"] == "step budget 2 reached" and s["events_gate"] == 2 and s["steps"] == 2
    assert s["base_accuracy"] == s["adapted_accuracy"]  # nothing was trained


def test_collapse_monitor_rolls_back_to_the_last_good_adapter(tmp_path):
    out = tmp_path / "collapse"
    # an entropy floor no answer distribution can reach: fires as soon as KL rises after warm-up
    assert main(transductive(out, "--monitor", "rollback", "--monitor-warmup", "1", "--entropy-floor", "100",
                             "--lr", "1e-3")) == 0
    events = [e for e in jsonl(out / "events.jsonl") if e["event"] != "gate"]
    assert [e["event"] for e in events] == ["collapse", "rollback"]
    assert events[1]["to_step"] == events[0]["step"] - 1
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"].startswith("answer entropy") and s["steps"] == events[0]["step"] < 8
    # with the monitor on, certainty indicators are logged every step (from the sampler's token stats)
    assert all(m["self_certainty"] > 0 and m["token_entropy"] >= 0 for m in jsonl(out / "metrics.jsonl"))


def test_answer_prior_reset_undoes_every_update(tmp_path):
    """--prior-monitor reset: at the first verdict (step 2, two items in the window) the base adapter comes back,
    so after two real updates at a large lr the adapted greedy answers are the base's, item for item; the
    monitor's view (top answer, share, items per answer set) is in every metrics row."""
    out = tmp_path / "reset"
    assert main(transductive(out, "--prior-monitor", "reset", "--prior-min-items", "2", "--prior-max-share", "0",
                             "--prior-margin", "-1", "--lr", "1e-3")) == 0
    events = jsonl(out / "events.jsonl")
    assert [e["event"] for e in events if e["event"] != "gate"] == ["answer_prior", "rollback"]
    assert events[-1]["to_step"] == 0 and events[-1]["step"] == 2
    metrics = jsonl(out / "metrics.jsonl")
    assert len(metrics) == 2 and all(any(k.startswith("prior/global:") and k.endswith("/share") for k in m) for m in metrics)
    base = {r["id"]: r["base_response"] for r in jsonl(out / "base.jsonl")}
    assert {r["id"]: r["response"] for r in jsonl(out / "predictions.jsonl")} == base


def test_greedy_probe_fires_first_and_resets(tmp_path):
    """--prior-probe-every 1: after the first real update the probe answers two adaptation items greedily; with
    thresholds any answer exceeds it fires at step 1, before the sampled-answer monitor has two items, and the
    reset brings back the base answers item for item. Its view is in the metrics row."""
    out = tmp_path / "probe"
    assert main(transductive(out, "--prior-monitor", "reset", "--prior-min-items", "2", "--prior-max-share", "0",
                             "--prior-margin", "-1", "--prior-probe-every", "1", "--prior-probe-items", "2",
                             "--lr", "1e-3")) == 0
    events = [e for e in jsonl(out / "events.jsonl") if e["event"] != "gate"]
    assert [e["event"] for e in events] == ["answer_prior", "rollback"] and events[0]["step"] == 1
    assert events[0]["reason"].startswith("greedy probe of 2 items: answer-prior collapse")
    (row,) = jsonl(out / "metrics.jsonl")
    assert row["probe/global:number/items"] == 2 and "greedy probe" in row["answer_prior"]
    base = {r["id"]: r["base_response"] for r in jsonl(out / "base.jsonl")}
    assert {r["id"]: r["response"] for r in jsonl(out / "predictions.jsonl")} == base


# cluster_vote's novelty bonus keeps a buffer of recent anchors across steps: a resume must restore it
STATEFUL_REWARD = ["--reward", "majority+0.5*cluster_vote", "--cluster-vote-novelty", "1.0"]


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    ref, killed = tmp_path / "unbroken", tmp_path / "killed"
    assert main(transductive(ref, *STATEFUL_REWARD)) == 0
    proc = subprocess.Popen([sys.executable, "-m", "ttrl.cli", *transductive(killed, *STATEFUL_REWARD)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 300
    while len(jsonl(killed / "metrics.jsonl")) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    assert main(["run", "--resume", str(killed)]) == 0

    def strip(row):
        return {k: v for k, v in row.items() if not k.startswith("seconds") and k not in ("adapt_seconds", "peak_rss_mb")}

    a, b = (json.loads((d / "summary.json").read_text()) for d in (ref, killed))
    assert strip(a) == strip(b)
    pa, pb = jsonl(ref / "predictions.jsonl"), jsonl(killed / "predictions.jsonl")
    assert pa == pb and len({p["id"] for p in pb}) == len(pb) == 6  # none twice, none lost
    ma, mb = jsonl(ref / "metrics.jsonl"), jsonl(killed / "metrics.jsonl")
    # bit for bit: deterministic kernels (run.deterministic, the default) take thread timing and buffer addresses
    # out of the sums, so a fresh process continues exactly (before them an AMD EPYC run differed by 2.4e-7 on a KL)
    assert len(mb) == len(ma) == 8
    assert [strip(x) for x in ma] == [strip(y) for y in mb]
    assert torch.are_deterministic_algorithms_enabled()
    assert jsonl(ref / "base.jsonl") == jsonl(killed / "base.jsonl")
    # resuming a finished run changes nothing
    assert main(["run", "--resume", str(killed)]) == 0
    assert len(jsonl(killed / "predictions.jsonl")) == 6


def test_answer_prior_monitor_fires_and_stops(tmp_path):
    """A threshold every answer exceeds: the cross-item monitor fires on the first verdict, logs the answer and
    its share, and stops adaptation (the summary reports the base and adapted top-answer shares)."""
    out = tmp_path / "prior"
    assert main(transductive(out, "--prior-monitor", "stop", "--prior-min-items", "1", "--prior-max-share", "0",
                             "--prior-margin", "-1")) == 0
    (event,) = [e for e in jsonl(out / "events.jsonl") if e["event"] == "answer_prior"]
    assert event["action"] == "stop" and "is the majority answer of" in event["reason"]
    s = json.loads((out / "summary.json").read_text())
    assert s["events_answer_prior"] == 1 and s["steps"] == 1 and s["stopped"] == event["reason"]
    assert 0 < s["base_top_answer_share"] <= 1 and 0 < s["adapted_top_answer_share"] <= 1
