"""Reliability as a user meets it (issue 14): the CLI run in a subprocess, as from a shell, with tiny budgets.
No silent wrong result, no data loss, no traceback: every mistake is one `ttrl: error: ...` line (exit 2), a
bad item costs that item only, and a run can always be continued or rerun.

Cases that fail before the model loads are cheap (about a second each); the few that load SmolLM2 are
marked slow."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--task-size", "4", "--adapt-size", "2", "--epochs", "1", "--n-votes", "2", "--n-train", "2",
        "--prompts-per-step", "2", "--max-new-tokens", "8", "--eval-max-new-tokens", "8", "--base-maj-votes", "0",
        "--answer-type", "number"]  # JSONL data without choices: the answer type is never read from labels
QUESTIONS = [(3, 4), (12, 5), (6, 2), (20, 13)]


def env(**extra):
    e = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    e["PYTHONPATH"] = os.pathsep.join([str(SRC)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    return {k: v for k, v in e.items() if v is not None}


def ttrl(*args, cwd=None, timeout=900, extra_env=None, **kw):
    return subprocess.run([sys.executable, "-m", "ttrl.cli", *map(str, args)], capture_output=True, text=True, check=False,
                          cwd=cwd, timeout=timeout, env=env(**(extra_env or {})), **kw)


def popen(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "ttrl.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), **kw)


def one_error(p, *needles, rc=2):
    """Exit code rc, no traceback, exactly one `ttrl: error:` line, holding every needle."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("ttrl: error: ")]
    assert p.returncode == rc and len(errors) == 1, (p.returncode, p.stderr[-3000:])
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def jsonl(path):
    return [json.loads(ln) for ln in Path(path).read_text().splitlines()] if Path(path).exists() else []


def write_items(path, questions=QUESTIONS, extra=()):
    rows = [json.dumps({"id": f"q{i}", "prompt": f"Calculate {a} + {b}.", "answer": a + b}) for i, (a, b) in
            enumerate(questions)]
    path.write_text("\n".join([*rows, *extra]) + "\n")
    return path


# -- item 9 and 10: every bad option or path is one line, before the model loads -----------------------

@pytest.mark.parametrize("args,needles", [
    (["--lr", "-1"], ["--lr: must be >= 0, got -1.0"]),
    (["--seed", "-1"], ["--seed: must be >= 0"]),
    (["--protocol", "episodic", "--reset-every", "0"], ["--reset-every: must be >= 1, got 0"]),
    (["--eval-size", "-1"], ["--eval-size: must be >= 0, got -1"]),  # item 5: was Python slicing
    (["--max-new-tokens", "0"], ["--max-new-tokens: must be >= 1, got 0"]),
    (["--n-votes", "2.7"], ["--n-votes: expected int, got '2.7'"]),
    (["--lr", "nan"], ["--lr: must be a finite number"]),
    (["--task-args", "{min_digits: 1"], ["--task-args: not a valid YAML/JSON mapping"]),
    (["--model", "/no/such/model"], ["--model /no/such/model: no such model folder"]),
    (["--data", "-"], ["standard input is read by the online and episodic protocols"]),
], ids=["lr", "seed", "reset_every", "eval_size", "max_new_tokens", "int_flag", "nan", "task_args", "model_path",
        "stdin_transductive"])
def test_bad_option_is_one_line_before_the_model_loads(tmp_path, args, needles):
    t0 = time.perf_counter()
    p = ttrl("run", *TINY, "--out", tmp_path / "out", *args)
    one_error(p, *needles)
    assert time.perf_counter() - t0 < 60  # no model load (one takes 5-20 s); generous for a busy machine
    assert not (tmp_path / "out").exists()  # a rejected command leaves nothing behind


def test_bad_paths_are_one_line_errors(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0")
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x\n")
    data = write_items(tmp_path / "d.jsonl")
    cases = [
        (["--data", folder], [f"{folder}: is a folder, not a JSONL file"]),
        (["--config", folder], [f"{folder}: is a folder, not a YAML config file"]),
        (["--data", data, "--out", a_file], [f"{a_file}: is a file; --out takes a folder"]),
        (["--data", data, "--out", a_file / "sub"], ["cannot write the run folder here"]),
        (["--data", data, "--model", folder], ["not a Hugging Face model (no config.json)"]),
        (["--data", data, "--model", a_file], ["is a file; give a Hugging Face model folder"]),
        (["--data", tmp_path / "missing.jsonl"], ["missing.jsonl: no such file"]),
    ]
    for args, needles in cases:
        out = [] if "--out" in args else ["--out", tmp_path / "o"]
        one_error(ttrl("run", *TINY, *out, *args), *needles)
    assert not (tmp_path / "o").exists()


def test_out_in_a_read_only_place(tmp_path):
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "run"
    else:  # root writes through permission bits; /sys refuses new entries even to root
        target = Path("/sys/ttrl-reliability-test")
        try:
            target.mkdir()
            target.rmdir()
            pytest.skip("no read-only place to try here")
        except OSError:
            pass
    one_error(ttrl("run", *TINY, "--data", write_items(tmp_path / "d.jsonl"), "--out", target),
              f"{target}: cannot write the run folder here")


def test_unreachable_hub_id_fails_fast(tmp_path):
    data = write_items(tmp_path / "d.jsonl")
    t0 = time.perf_counter()
    p = ttrl("run", *TINY, "--data", data, "--out", tmp_path / "o", "--model", "someone/no-such-model",
             extra_env={"HF_HUB_OFFLINE": "1"})
    one_error(p, "someone/no-such-model: not a local folder and not in the Hugging Face cache", "HF_HUB_OFFLINE")
    # no offline flag, hub unreachable (a closed local port): refused in seconds, not after 30 s of retries
    p = ttrl("run", *TINY, "--data", data, "--out", tmp_path / "o", "--model", "someone/no-such-model",
             extra_env={"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9",
                        "HTTPS_PROXY": None, "https_proxy": None, "ALL_PROXY": None, "all_proxy": None})
    one_error(p, "cannot be reached")
    assert time.perf_counter() - t0 < 60


def test_device_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = ttrl("run", *TINY, "--data", write_items(tmp_path / "d.jsonl"), "--out", tmp_path / "o", "--device", "cuda")
    one_error(p, "--device cuda: CUDA is not available here")
    one_error(ttrl("run", *TINY, "--out", tmp_path / "o", "--device", "gpu0"), "not a torch device")


def test_stdin_closed(tmp_path):
    p = ttrl("run", *TINY, "--protocol", "online", "--data", "-", "--out", tmp_path / "o",
             stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0))  # like `<&-` in a shell
    one_error(p, "<stdin>: standard input is closed")


def test_yaml_values_are_checked_not_truncated(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("sampling:\n  n_votes: 2.7\n")
    one_error(ttrl("run", "--config", y, "--out", tmp_path / "o"), f"{y}: sampling.n_votes: expected int, got 2.7")
    y.write_text("grpo:\n  lr: -0.5\n")
    one_error(ttrl("run", "--config", y, "--out", tmp_path / "o"), f"{y}: grpo.lr: must be >= 0")


def test_yaml_and_flags_are_merged_before_validation(tmp_path):
    from ttrl.cli import build_parser, config_from_args
    from ttrl.config import ConfigError

    y = tmp_path / "run.yaml"
    y.write_text("sampling:\n  n_votes: 2\n")  # alone, the default n_train 8 > 2; with --n-train 2 it is fine
    cfg = config_from_args(build_parser().parse_args(["run", "--config", str(y), "--n-train", "2"]))
    assert (cfg.sampling.n_votes, cfg.sampling.n_train) == (2, 2)
    with pytest.raises(ConfigError, match="n_train=8, n_votes=2"):
        config_from_args(build_parser().parse_args(["run", "--config", str(y)]))


def test_non_utf8_byte_in_a_data_file_names_the_line(tmp_path):
    from ttrl.data import DataError, Item, iter_jsonl

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "Calculate 1 + 1.", "answer": 2}\n{"prompt": "Calculate 2 \xff 2."}\n'
                    b'{"prompt": "Calculate 3 + 3.", "answer": 6}\n')
    entries = list(iter_jsonl(bad))  # a stream reports the line and goes on
    assert [n for n, _ in entries] == [1, 2, 3]
    assert [type(e) for _, e in entries] == [Item, DataError, Item]
    column = bad.read_bytes().splitlines()[1].index(b"\xff") + 1
    assert str(entries[1][1]) == f"{bad}, line 2: not valid UTF-8 (byte 0xff at column {column})"
    # a transductive data set must be whole: the bad line is the error, named
    one_error(ttrl("run", *TINY, "--data", bad, "--out", tmp_path / "o"), f"{bad}, line 2: not valid UTF-8")


def test_token_budget_is_capped_to_the_context():
    from ttrl.config import Config
    from ttrl.session import capped_budget, fit_budgets, too_long

    assert capped_budget(48, [30, 50, 12000], 8192) == 48  # a prompt past the context is skipped, not capped for
    assert capped_budget(100_000, [30, 50, 12000], 8192) == 8192 - 50
    assert capped_budget(100_000, [], 8192) == 4096  # stdin: no prompt known yet
    cfg = Config()
    cfg.sampling.max_new_tokens = 100_000
    with pytest.warns(UserWarning, match="max_new_tokens 100000 does not fit the model's context of 8192 tokens"):
        fit_budgets(cfg, [30, 50], 8192)
    assert (cfg.sampling.max_new_tokens, cfg.sampling.eval_max_new_tokens) == (8142, 48)
    from ttrl.data import Item, Query

    assert too_long(Item(Query("a", "x")), 8100, 8192, 48) is None
    assert "prompt of 8150 tokens + 48 new tokens exceeds" in too_long(Item(Query("a", "x")), 8150, 8192, 48)


# -- item 1: torn last lines ------------------------------------------------------------------------------

APPEND_ONLY = ["predictions.jsonl", "metrics.jsonl", "events.jsonl", "base.jsonl", "base_votes.jsonl", "resets.jsonl"]


def test_torn_tail_of_every_append_only_output_is_dropped_on_resume(tmp_path):
    from ttrl.config import Config
    from ttrl.runlog import RunDir

    cfg = Config()
    d = tmp_path / "run"
    RunDir(d, cfg).close()
    whole = [{"id": "a", "step": 1, "x": 1.5}, {"id": "b", "step": 2, "x": None}]
    for name in APPEND_ONLY:
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in whole) + '{"id": "c", "step": 3, "x"')
    out = RunDir(d, cfg, resume=True)
    assert sorted(r["file"] for r in out.repairs) == sorted(APPEND_ONLY)
    assert all(r["line"] == 3 for r in out.repairs)
    for name in APPEND_ONLY:
        assert out.read(name) == whole
        out.append(name, {"id": "c", "step": 3, "x": 2.0})  # the next row starts on its own line
        assert jsonl(d / name) == [*whole, {"id": "c", "step": 3, "x": 2.0}]
    out.close()
    # a whole last row that only lacks its line end is kept, not reported
    (d / "metrics.jsonl").write_text(json.dumps(whole[0]))
    out = RunDir(d, cfg, resume=True)
    assert out.repairs == [] and (d / "metrics.jsonl").read_text() == json.dumps(whole[0]) + "\n"


def test_truncated_checkpoint_is_one_line(tmp_path):
    import torch

    from ttrl.config import Config, save_yaml

    d = tmp_path / "run"
    d.mkdir()
    cfg = Config()
    cfg.run.out = str(d)
    save_yaml(cfg, d / "config.yaml")
    torch.save({"trainer": {"weights": torch.zeros(1000)}, "progress": {}}, d / "checkpoint.pt")
    data = (d / "checkpoint.pt").read_bytes()
    (d / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    one_error(ttrl("run", "--resume", d), f"{d / 'checkpoint.pt'}: damaged or truncated")
    one_error(ttrl("run", "--resume", tmp_path), "not a run folder (no config.yaml)")


# -- item 2: --overwrite only ever deletes what a run wrote ------------------------------------------------

def test_overwrite_never_deletes_what_a_run_did_not_write(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    data = write_items(project / "good.jsonl")
    p = ttrl("run", *TINY, "--data", data, "--out", project, "--overwrite")
    one_error(p, f"{project}: not a ttrl run folder (it holds good.jsonl)")
    assert data.exists() and sorted(os.listdir(project)) == ["good.jsonl"]
    # a run folder into which the user put a file of their own: refused as a whole, nothing deleted
    run = tmp_path / "run"
    run.mkdir()
    for name in (".ttrl-run", "config.yaml", "predictions.jsonl", "summary.json"):
        (run / name).write_text("{}\n")
    (run / "notes.txt").write_text("mine\n")
    one_error(ttrl("run", *TINY, "--data", data, "--out", run, "--overwrite"), "it holds notes.txt")
    assert len(os.listdir(run)) == 5
    # without the user's file: a finished run is refused without --overwrite, and replaced with it
    (run / "notes.txt").unlink()
    one_error(ttrl("run", *TINY, "--data", data, "--out", run), "holds a finished run; pass --overwrite")
    from ttrl.runlog import prepare

    prepare(run, overwrite=True)
    assert os.listdir(run) == [".ttrl-run"]


# -- the cases that need the model ------------------------------------------------------------------------

@pytest.mark.slow
def test_failed_run_reruns_and_an_all_skipped_run_says_so(tmp_path):
    """Item 6 (a failed run blocks the corrected command; a run whose groups were all skipped says "after 1
    steps") and item 10 (YAML n_votes 2 with --n-train 2 on the command line)."""
    y = tmp_path / "run.yaml"
    y.write_text("sampling:\n  n_votes: 2\n")
    data = write_items(tmp_path / "d.jsonl", extra=['{"promt": "Calculate 1 + 1."}'])
    out = tmp_path / "out"
    args = ["run", "--config", y, "--n-train", "2", "--data", data, "--out", out, "--gate-min-majority", "1.01",
            *TINY[:6], *TINY[10:]]
    one_error(ttrl(*args), f"{data}, line 5, field 'prompt'")  # fails after the run folder was made
    write_items(data)  # the user fixes the data and reruns the same command
    p = ttrl(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert "after 1 steps" not in p.stdout and "after 0 updates on 2 unlabeled items" in p.stdout
    assert "note: every group was skipped (majority ratio" in p.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 1 and s["updates"] == 0 and s["skipped"].startswith("majority ratio")
    assert s["base_accuracy"] == s["adapted_accuracy"]
    saved = yaml.safe_load((out / "config.yaml").read_text())["sampling"]
    assert (saved["n_votes"], saved["n_train"]) == (2, 2)


@pytest.mark.slow
def test_live_stdin_skips_bad_lines_and_goes_on(tmp_path):
    """Item 8 (a non-UTF-8 byte ended the stream), item 4 (a duplicate id was trained on but never answered)
    and item 7 (a prompt far past the context ran the machine out of memory): each costs its own line only."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ttrl.cli", "run", "--protocol", "online", "--data", "-",
                             "--out", str(out), "--answer-type", "number", *TINY[6:]],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    good = [json.dumps({"id": f"q{i}", "prompt": f"Calculate {a} + {b}.", "answer": a + b}).encode()
            for i, (a, b) in enumerate(QUESTIONS)]
    proc.stdin.write(good[0] + b"\n")
    proc.stdin.flush()
    deadline = time.time() + 600
    while not jsonl(out / "predictions.jsonl") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # answered while the stream is still open
    assert [r["id"] for r in jsonl(out / "predictions.jsonl")] == ["q0"]
    huge = json.dumps({"id": "huge", "prompt": "Add: " + "1 + " * 4000 + "1.", "answer": 4001}).encode()
    not_utf8 = b'{"id": "bad", "prompt": "Calculate 2 \xff 2.", "answer": 4}'
    rest = [not_utf8, good[1],
            json.dumps({"id": "q0", "prompt": "Calculate 9 + 9.", "answer": 18}).encode(), huge, good[2]]
    _, err = proc.communicate(b"\n".join(rest) + b"\n", timeout=900)
    err = err.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    preds = jsonl(out / "predictions.jsonl")
    assert [(r["id"], r["index"]) for r in preds] == [("q0", 0), ("q1", 2), ("q2", 5)]
    bad = [e["reason"] for e in jsonl(out / "events.jsonl") if e["event"] == "bad_input"]
    column = not_utf8.index(b"\xff") + 1
    assert bad == [f"<stdin>, line 2: not valid UTF-8 (byte 0xff at column {column})",
                   "<stdin>, line 4, field 'id': duplicate id 'q0' (first used by item 0; ids name answers)",
                   bad[2]]
    assert bad[2].startswith("item 'huge': prompt of ") and "exceeds the model's context of 8192 tokens" in bad[2]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_items"] == 3 and s["events_bad_input"] == 3


@pytest.mark.slow
def test_ctrl_c_then_torn_tail_then_resume(tmp_path):
    """Ctrl-C (a 126-line traceback) and item 1 (a torn last line glued to the next row; the summary counted
    the rows before it)."""
    data = write_items(tmp_path / "d.jsonl", QUESTIONS + [(7, 7), (9, 1)])
    out = tmp_path / "out"
    proc = popen("run", "--protocol", "online", "--data", data, "--out", out, *TINY[6:])
    deadline = time.time() + 600
    while len(jsonl(out / "predictions.jsonl")) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    # one press: a press Python drops (in a finalizer) is raised again at the next row (run._catch_ctrl_c)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    said = [ln for ln in err.splitlines() if "ttrl: interrupted" in ln]
    assert said == [f"ttrl: interrupted; the work done so far is kept in {out}; continue with: ttrl run --resume {out}"]
    # a kill in the middle of writes: each append-only file ends in a fragment
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"id": "q5", "index": 5, "answer": "1')
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"item": 5, "step": 6, "rew')
    p = ttrl("run", "--resume", out)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    preds = jsonl(out / "predictions.jsonl")  # every line parses
    assert [r["id"] for r in preds] == [f"q{i}" for i in range(6)]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_items"] == 6 and s["online_accuracy"] == pytest.approx(sum(r["correct"] for r in preds) / 6)
    assert f"({s['n_items']} items answered" in p.stdout
    assert [m["step"] for m in jsonl(out / "metrics.jsonl")] == list(range(1, 7))
    repaired = sorted(e["file"] for e in jsonl(out / "events.jsonl") if e["event"] == "repaired")
    assert repaired == ["metrics.jsonl", "predictions.jsonl"] and s["events_repaired"] == 2


@pytest.mark.parametrize("choices", [None, ["red", "blue"]])
def test_stdin_and_file_resolve_the_same_answer_type(tmp_path, monkeypatch, choices):
    """Item 3: the same lines from a file or from stdin get the same answer type (labels never decide it)."""
    import io

    from ttrl.config import Config, ConfigError
    from ttrl.data import Dataset
    from ttrl.session import _stream_head, resolve_answer_type

    lines = [json.dumps({"id": f"q{i}", "prompt": f"Calculate {a} + {b}.", "answer": a + b,
                         **({"choices": choices} if choices else {})}) for i, (a, b) in enumerate(QUESTIONS)]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    kinds = []
    for spec in (str(f), "-"):
        head, stream = _stream_head(spec)
        cfg = Config()
        cfg.data.data = spec
        try:
            kinds.append(resolve_answer_type(cfg, Dataset("d", head)))
        except ConfigError as e:
            kinds.append(f"error: {'--answer-type' in str(e)}")
        assert [e.query.id for _, e in stream()] == ["q0", "q1", "q2", "q3"]  # the peeked line is replayed
    assert kinds[0] == kinds[1] == ("choice" if choices else "error: True")


def test_overwrite_clears_a_run_with_a_report_and_tracker_folders(tmp_path):
    """A run folder with report.html and a tensorboard/ folder is still a run folder (--overwrite replaces it,
    and without results it is reused); a foreign folder inside is refused."""
    from ttrl.runlog import MARKER, folder_state, prepare

    run = tmp_path / "run"
    run.mkdir()
    for name in (MARKER, "config.yaml", "events.jsonl", "report.html"):
        (run / name).write_text("x")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1").write_text("x")
    assert folder_state(run) == "fresh"  # a failed run: reusable without --overwrite
    (run / "summary.json").write_text("{}")
    assert folder_state(run) == "run"
    prepare(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [MARKER]
    (run / "mine").mkdir()
    assert folder_state(run) == "foreign"


def test_a_ctrl_c_python_drops_is_raised_again_at_the_next_row(tmp_path):
    """A KeyboardInterrupt raised inside a finalizer is printed and dropped by Python; the run's handler also marks
    the press on the run folder, so the next row written raises it (the lost first press of the ctrl-c test)."""
    import gc
    import signal

    from ttrl.config import Config
    from ttrl.run import _catch_ctrl_c
    from ttrl.runlog import RunDir

    out = RunDir(tmp_path / "run", Config())
    previous = _catch_ctrl_c(out)
    try:
        class Finalised:
            def __del__(self):  # Ctrl-C pressed while Python runs this: the exception is "ignored"
                signal.raise_signal(signal.SIGINT)

        Finalised()
        gc.collect()
        assert out.interrupt_pending  # the KeyboardInterrupt itself was dropped ...
        with pytest.raises(KeyboardInterrupt):  # ... and comes back at the next row
            out.append("metrics.jsonl", {"step": 1})
        out.append("metrics.jsonl", {"step": 1})  # once
    finally:
        signal.signal(signal.SIGINT, previous)
        out.close()
