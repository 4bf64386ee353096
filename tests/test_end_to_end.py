"""The CLI end to end on the real SmolLM2 with a tiny budget: every output file and field, and the
structural guarantee that labels never influence adaptation."""
import json

import pytest
import yaml

from ttrl.cli import main

pytestmark = pytest.mark.slow

TINY = ["--adapt-size", "4", "--epochs", "1", "--n-votes", "4", "--n-train", "3", "--prompts-per-step", "2",
        "--base-maj-votes", "2", "--max-new-tokens", "24", "--eval-max-new-tokens", "24", "--seed", "1"]
QUESTIONS = [(3, 4), (12, 5), (6, 2), (20, 13), (7, 7)]
METRIC_FIELDS = {"step", "epoch", "reward_mean", "loss", "kl", "answer_entropy", "majority_ratio", "label_accuracy",
                 "reward_accuracy", "response_length", "seconds", "grad_norm", "groups_trained"}
PRED_FIELDS = {"id", "base_answer", "adapted_answer", "base_correct", "adapted_correct", "base_maj_answer", "label"}
SUMMARY_FIELDS = {"base_accuracy", "adapted_accuracy", "base_maj_accuracy", "base_sample_accuracy", "base_pass_at_n",
                  "n_adapt", "n_eval", "reward", "steps", "seconds"}


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_data(path, offset):
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Calculate {a} + {b}.", "answer": a + b + offset})
                            + "\n" for i, (a, b) in enumerate(QUESTIONS)))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from ttrl.zoo import resolve_model

    root = tmp_path_factory.mktemp("e2e")
    model_dir = resolve_model("smollm2-135m")  # exercise the "any local Hugging Face folder" path
    out = {}
    for name, offset in (("true", 0), ("wrong", 1)):
        data = write_data(root / f"{name}.jsonl", offset)
        args = ["run", "--model", model_dir, "--data", str(data), "--answer-type", "number", "--reward", "majority",
                "--protocol", "transductive", "--out", str(root / name), *TINY]
        assert main(args) == 0
        out[name] = root / name
    return out


def test_outputs_have_every_file_and_field(runs):
    d = runs["true"]
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["sampling"]["n_votes"] == 4 and cfg["run"]["seed"] == 1 and cfg["data"]["data"].endswith("true.jsonl")
    metrics = jsonl(d / "metrics.jsonl")
    assert len(metrics) == 2  # 4 items / 2 per step, 1 epoch
    for row in metrics:
        assert METRIC_FIELDS <= row.keys()
        assert 0 <= row["majority_ratio"] <= 1 and row["response_length"] > 0
    preds = jsonl(d / "predictions.jsonl")
    assert [p["id"] for p in preds] == [f"q{i}" for i in range(5)]
    for p in preds:
        assert PRED_FIELDS <= p.keys()
        assert isinstance(p["base_correct"], bool) and isinstance(p["adapted_correct"], bool)
    summary = json.loads((d / "summary.json").read_text())
    assert SUMMARY_FIELDS <= summary.keys()
    assert summary["n_eval"] == 5 and summary["n_adapt"] == 4 and summary["steps"] == 2
    assert summary["answer_type"] == "number"
    assert summary["base_accuracy"] == sum(p["base_correct"] for p in preds) / 5
    assert summary["adapted_accuracy"] == sum(p["adapted_correct"] for p in preds) / 5
    # the evaluation set holds the 4 adaptation items and 1 other: both parts reported apart
    assert summary["n_adapted_items"] == 4 and summary["n_other_items"] == 1
    for key in ("base_accuracy", "adapted_accuracy"):
        parts = 4 * summary[f"adapted_items_{key}"] + summary[f"other_items_{key}"]
        assert parts / 5 == pytest.approx(summary[key])
    assert summary["base_pass_at_n"] >= max(summary["base_sample_accuracy"], summary["base_maj_accuracy"])


def test_labels_never_reach_rewards_or_updates(runs):
    """Same seed, labels changed: every label-free number and every answer is identical; only the
    label-based metrics differ. Labels reach evaluation and nothing else."""
    a, b = (jsonl(runs[k] / "metrics.jsonl") for k in ("true", "wrong"))
    label_keys = {"label_accuracy", "reward_accuracy"}
    timing = {k for k in a[0] if k.startswith("seconds")}
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in label_keys | timing} == \
               {k: v for k, v in rb.items() if k not in label_keys | timing}
    pa, pb = (jsonl(runs[k] / "predictions.jsonl") for k in ("true", "wrong"))
    assert [p["adapted_answer"] for p in pa] == [p["adapted_answer"] for p in pb]
    assert [p["base_answer"] for p in pa] == [p["base_answer"] for p in pb]
    # the wrong labels really are wrong: an answer right under the true labels is wrong under these
    truth = {p["id"]: p["label"] for p in pa}
    right = [p for p in pb if p["base_answer"] == truth[p["id"]]]
    assert right and not any(p["base_correct"] for p in right)


def test_open_ended_run_with_composed_rewards(tmp_path):
    """Free-text answers: an embedding reward plus a certainty reward (token statistics from the
    sampler) through the CLI; BLEU and ROUGE-L reported against the references."""
    data = tmp_path / "open.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in [
        ("What colour is the sky on a clear day?", "The sky is blue."),
        ("What do cats drink?", "Cats drink water or milk."),
        ("Where do fish live?", "Fish live in water."),
    ]))
    out = tmp_path / "run"
    args = ["run", "--data", str(data), "--answer-type", "text", "--reward", "cluster_vote+0.5*self_certainty",
            "--out", str(out), "--adapt-size", "2", "--epochs", "1", "--n-votes", "4", "--n-train", "4",
            "--prompts-per-step", "2", "--base-maj-votes", "0", "--max-new-tokens", "16", "--eval-max-new-tokens", "16"]
    assert main(args) == 0
    (row,) = jsonl(out / "metrics.jsonl")
    assert {"reward/cluster_vote/k", "reward/self_certainty/self_certainty",
            "reward/cluster_vote/mean_pairwise_similarity"} <= row.keys()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_type"] == "text" and summary["base_maj_accuracy"] is None
    for k in ("base_bleu", "adapted_bleu", "base_rouge_l", "adapted_rouge_l"):
        assert 0 <= summary[k] <= (100 if "bleu" in k else 1)
    for k in ("base_embedding_similarity", "adapted_embedding_similarity"):
        assert -1 <= summary[k] <= 1
