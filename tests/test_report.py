"""Run reports (ttrl report / ttrl compare) and the TensorBoard logger.

Most run folders are written here as small JSONL files shaped like a real run's (fast); one slow test does a
real tiny CLI run."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from ttrl.cli import main
from ttrl.compare import compare
from ttrl.config import Config, save_yaml
from ttrl.report import report_quietly, write_report

SRC = Path(__file__).resolve().parents[1] / "src"


class Page(HTMLParser):
    """What the tests look at: embedded images, tables by id (rows of cell texts), cards with data-key."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.alts, self.tables, self.cards, self.text = [], [], {}, {}, []
        self._table = self._row = self._cell = self._card = None
        self._card_text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
            self.alts.append(a.get("alt", ""))
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id") or f"t{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "div" and "data-key" in a:
            self._card, self._card_text, self._depth = a, [], 0
        if tag == "div" and self._card is not None:
            self._depth += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._card is not None:
            self._depth -= 1
            if self._depth == 0:  # the card's own closing tag
                self.cards[self._card["data-key"]] = (json.loads(self._card["data-value"]), self._card_text)
                self._card = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._card is not None and data.strip():
            self._card_text.append(data.strip())


def check_page(path: Path) -> Page:
    page = Page(path.read_text(encoding="utf-8"))
    assert page.images, "no curves embedded"
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), "images must be embedded (no network)"
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        assert img.size[0] > 300 and img.size[1] > 200
    low = path.read_text(encoding="utf-8").lower()
    assert "http://" not in low and "https://" not in low and "<script" not in low
    return page


def _jsonl(path: Path, rows: list[dict], torn: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + torn, encoding="utf-8")


def _metrics(n: int, labels: bool = True) -> list[dict]:
    rows = []
    for s in range(1, n + 1):
        row = {"epoch": (s - 1) // 3, "step": s, "reward_mean": 0.4 + 0.05 * s, "loss": 0.01 * s, "kl": 0.0002 * s,
               "clip_frac": 0.0, "grad_norm": 0.5, "majority_ratio": 0.45 + 0.05 * s, "answer_entropy": 1.6 - 0.1 * s,
               "unique_answers": 4.0, "parsed": 1.0, "response_length": 12.0 - 0.3 * s, "finished": 1.0,
               "groups_trained": 4.0, "groups_gated": 0.0, "tokens": 384.0, "groups": 4.0, "seconds": 9.0,
               "seconds_sample": 5.0, "seconds_reward": 0.01, "seconds_update": 4.0}
        if labels:
            row.update(label_accuracy=0.5 + 0.05 * s, reward_accuracy=0.6 + 0.02 * s)
        rows.append(row)
    return rows


ITEMS = [  # id, label, base answer, adapted answer
    ("q0", "33", "22", "33"), ("q1", "5", "5", "5"), ("q2", "71", "71", "70"), ("q3", "40", "41", "41"),
    ("q4", "12", "21", "12"), ("q5", "9", "9", "9"),
]


def transductive_run(path: Path, labels: bool = True, finished: bool = True) -> dict | None:
    """A 6-item transductive run: q0, q4 fixed, q2 broken (with labels); summary.json from its predictions."""
    path.mkdir(parents=True)
    cfg = Config()
    cfg.run.out = str(path)
    save_yaml(cfg, path / "config.yaml")
    base, votes, preds = [], [], []
    for i, lab, b, a in ITEMS:
        lab = lab if labels else None
        base.append({"id": i, "base_answer": b, "base_response": f"the answer is {b}"})
        v = [b] * 5 + [a] * 3
        votes.append({"id": i, "maj_answer": b, "votes": v, "n_correct": None if lab is None else v.count(lab)})
        row = {"id": i, "base_answer": b, "adapted_answer": a, "base_maj_answer": b, "label": lab,
               "response": f"so {a}", "base_correct": None if lab is None else b == lab,
               "adapted_correct": None if lab is None else a == lab,
               "base_maj_correct": None if lab is None else b == lab}
        preds.append(row)
    events = [{"step": 2, "event": "gate", "reason": "no answer parsed", "item": "q3"},
              {"step": 5, "event": "collapse", "reason": "answer entropy 0.04 < 0.05 while KL rises", "action": "rollback"},
              {"step": 5, "event": "rollback", "reason": "restored the adapter of step 4", "to_step": 4}]
    _jsonl(path / "base.jsonl", base)
    _jsonl(path / "base_votes.jsonl", votes)
    _jsonl(path / "events.jsonl", events)
    if not finished:  # killed mid-adaptation: metrics torn mid-line, no adapted predictions, no summary
        _jsonl(path / "metrics.jsonl", _metrics(3, labels), torn='{"epoch": 1, "step": 4, "reward_me')
        _jsonl(path / "predictions.jsonl", preds[:2], torn='{"id": "q2", "base_ans')
        return None
    _jsonl(path / "metrics.jsonl", _metrics(6, labels))
    _jsonl(path / "predictions.jsonl", preds)

    def acc(key):
        xs = [r[key] for r in preds if r[key] is not None]
        return sum(xs) / len(xs) if xs else None

    summary = {"base_accuracy": acc("base_correct"), "adapted_accuracy": acc("adapted_correct"),
               "base_maj_accuracy": acc("base_maj_correct"),
               "base_sample_accuracy": None if not labels else sum(v["n_correct"] / 8 for v in votes) / 6,
               "base_pass_at_n": None if not labels else 1.0, "n_adapt": 4, "n_eval": 6, "steps": 6,
               "stopped": "answer entropy 0.04 < 0.05 while KL rises", "tokens": 2304, "adapt_seconds": 54.0,
               "events_gate": 1, "events_collapse": 1, "events_rollback": 1, "events_early_stop": 0, "events_budget": 0,
               "seconds_protocol": 80.5, "reward": "majority", "answer_type": "number", "model": "smollm2-135m",
               "data": "rg:basic_arithmetic", "protocol": "transductive", "seed": 0, "seconds": 91.25,
               "peak_rss_mb": 1234.5}
    (path / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def test_report_finished_run(tmp_path):
    run = tmp_path / "run"
    summary = transductive_run(run)
    page = check_page(write_report(run))
    table = {k: json.loads(v) for k, v in page.tables["summary-json"][1:]}
    assert table == summary  # every number of summary.json, exactly
    for key in ("base_accuracy", "adapted_accuracy", "base_maj_accuracy", "base_sample_accuracy"):
        value, texts = page.cards[key]
        assert value == summary[key] and f"{100 * summary[key]:.1f}%" in texts
    assert page.tables["transitions"][1] == ["2", "1", "2", "1", "0"]  # fixed, broken, kept right, kept wrong
    text = " ".join(page.text)
    assert "Fixed by adaptation: 2" in text and "Broken by adaptation: 1" in text
    assert "the answer is 71" in text and "so 70" in text  # the broken item's base and adapted responses
    assert "restored the adapter of step 4" in text and "kl_coef: 0.001" in text  # events and config
    assert "unfinished" not in text
    assert {"mean reward", "KL to the reference", "answer entropy (nats)", "majority ratio",
            "response length (tokens)", "label / reward accuracy"} <= set(page.alts[0].split(", "))


def test_report_killed_run(tmp_path):
    run = tmp_path / "killed"
    transductive_run(run, finished=False)
    page = check_page(write_report(run))
    text = " ".join(page.text)
    assert "no summary.json" in text and "unfinished" in text
    assert "metrics.jsonl: 1" in text and "predictions.jsonl: 1" in text  # the torn lines, reported and skipped
    files = {r[0]: r[1:] for r in page.tables["files"][1:]}
    assert files["metrics.jsonl"] == ["3", "1"] and files["predictions.jsonl"] == ["2", "1"]
    assert "steps done" in text and "adapted accuracy so far" in text
    assert "100.0%" in text  # q0 and q1 evaluated so far, both right after adaptation


def test_report_no_labels(tmp_path):
    run = tmp_path / "nolabels"
    summary = transductive_run(run, labels=False)
    page = check_page(write_report(run))
    assert summary["adapted_accuracy"] is None
    value, texts = page.cards["adapted_accuracy"]
    assert value is None and "n/a" in texts
    assert "label / reward accuracy" not in page.alts[0]  # no label metrics logged, no panel
    text = " ".join(page.text)
    assert "Answer changed (no label to judge): 3" in text  # q0, q2, q4


def test_report_episodic_run(tmp_path):
    run = tmp_path / "episodic"
    run.mkdir()
    cfg = Config()
    cfg.protocol.protocol = "episodic"
    save_yaml(cfg, run / "config.yaml")
    preds = [{"id": f"q{i}", "index": i, "answer": str(i), "correct": i % 3 != 0, "label": str(i + (i % 3 == 0)),
              "step": i, "response": f"= {i}"} for i in range(8)]
    metrics = [{**m, "item": m["step"] - 1} for m in _metrics(8)]
    for m in metrics:
        m.pop("epoch")
    _jsonl(run / "predictions.jsonl", preds)
    _jsonl(run / "metrics.jsonl", metrics)
    _jsonl(run / "resets.jsonl", [{"index": i, "step": i + 1, "seconds": 0.002} for i in range(8)])
    _jsonl(run / "events.jsonl", [{"step": 0, "event": "bad_input", "reason": "data.jsonl, line 4: no prompt", "index": 3}])
    summary = {"online_accuracy": 5 / 8, "n_items": 8, "steps": 8, "stopped": None, "n_resets": 8,
               "reset_seconds_mean": 0.002, "protocol": "episodic", "reward": "majority", "seconds": 30.0,
               "peak_rss_mb": 900.0}
    (run / "summary.json").write_text(json.dumps(summary))
    page = check_page(write_report(run))
    value, texts = page.cards["online_accuracy"]
    assert value == summary["online_accuracy"] and "62.5%" in texts
    assert "accuracy of answers so far" in page.alts[0]
    text = " ".join(page.text)
    assert "line 4: no prompt" in text and "8 answered, 3 wrong" in text


def test_compare_two_runs(tmp_path):
    a, b = tmp_path / "majority", tmp_path / "killed"
    sa = transductive_run(a)
    transductive_run(b, finished=False)
    table, out = compare([a, b], tmp_path / "compare.html")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "status", "protocol"] and len(lines) == 4
    assert lines[2].split()[:2] == ["majority", "finished"] and f"{100 * sa['adapted_accuracy']:.1f}%" in lines[2]
    assert f"{100 * (sa['adapted_accuracy'] - sa['base_accuracy']):+.1f}pp" in lines[2]
    assert lines[3].split()[:2] == ["killed", "unfinished"]
    page = check_page(out)
    rows = page.tables["runs"]
    assert [r[0] for r in rows[1:]] == ["majority", "killed"]
    assert rows[1][rows[0].index("adapted")] == f"{100 * sa['adapted_accuracy']:.1f}%"


def test_cli_report_and_compare(tmp_path, capsys):
    run = tmp_path / "run"
    transductive_run(run)
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").exists()
    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "c.html")]) == 0
    assert "majority" in capsys.readouterr().out and (tmp_path / "c.html").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_report_failure_is_only_a_warning(tmp_path, caplog):
    assert report_quietly(tmp_path / "missing") is None
    assert "report.html not written" in caplog.text


@pytest.mark.parametrize("report", [True, False])
def test_run_end_writes_the_report_unless_turned_off(tmp_path, capsys, report):
    """The hook at the end of run(): here the run fails on a malformed data line (after the run folder is made,
    before the model loads), which still leaves a report of the folder; --report false leaves none."""
    out = tmp_path / "run"
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "Calculate 1 + 1."}\n{"promt": "2 + 2?"}\n')
    assert main(["run", "--data", str(data), "--answer-type", "number", "--report", str(report).lower(),
                 "--out", str(out)]) == 2
    assert "bad.jsonl, line 2" in capsys.readouterr().err
    assert (out / "report.html").exists() == report


def test_tensorboard_event_file_has_the_metric_names(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ttrl.loggers import make_logger
    from ttrl.runlog import RunDir

    cfg = Config()
    cfg.run.log = "tensorboard"
    out = RunDir(tmp_path / "run", cfg)
    out.logger = make_logger(cfg, out.path)
    rows = [{**m, "reward/majority_ratio": m["majority_ratio"]} for m in _metrics(4)]
    for r in rows:
        out.append("metrics.jsonl", r)
    out.write_json("summary.json", {"adapted_accuracy": 0.6, "steps": 4})
    out.close()
    files = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    names = {k for k in rows[0] if k != "step"}
    assert names | {"summary/adapted_accuracy", "summary/steps"} == tags  # the metrics.jsonl names, no others
    kl = acc.Scalars("kl")
    assert [e.step for e in kl] == [1, 2, 3, 4]
    assert [e.value for e in kl] == pytest.approx([r["kl"] for r in rows], rel=1e-6)
    assert acc.Scalars("reward/majority_ratio")[-1].value == pytest.approx(rows[-1]["majority_ratio"])


def test_wandb_offline_run_has_the_metric_names(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from ttrl.loggers import make_logger
    from ttrl.runlog import RunDir

    monkeypatch.setenv("WANDB_MODE", "offline")  # no network: the run is written to RUN_DIR/wandb only
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = Config()
    cfg.run.log = "wandb"
    out = RunDir(tmp_path / "run", cfg)
    out.logger = make_logger(cfg, out.path)
    for r in _metrics(3):
        out.append("metrics.jsonl", {**r, "reward/majority_ratio": 0.5})
    out.write_json("summary.json", {"adapted_accuracy": 0.6, "steps": 3})
    out.close()
    wandb.teardown()  # wait for the wandb service to finish writing the run file
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    data = run_file.read_bytes()  # protobuf records: the keys are stored as plain strings
    for name in ("reward_mean", "kl", "answer_entropy", "label_accuracy", "reward/majority_ratio", "adapted_accuracy"):
        assert name.encode() in data, name


@pytest.mark.slow
def test_real_cli_run_writes_report_and_tensorboard(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ttrl.cli", "run", "--task-size", "4", "--adapt-size", "2", "--epochs", "1",
           "--n-votes", "2", "--n-train", "2", "--max-new-tokens", "8", "--eval-max-new-tokens", "8",
           "--base-maj-votes", "2", "--log", "tensorboard", "--out", str(out)]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    page = check_page(out / "report.html")
    assert {k: json.loads(v) for k, v in page.tables["summary-json"][1:]} == summary
    assert page.cards["adapted_accuracy"][0] == summary["adapted_accuracy"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
