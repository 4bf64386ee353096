"""Data contract, config precedence, CLI help, and clear errors for bad input (file, line, field)."""
import json

import pytest

from ttrl.cli import build_parser, config_from_args, main
from ttrl.config import Config, ConfigError, apply_overrides, sections
from ttrl.data import DataError, read_jsonl
from ttrl.tasks import load_dataset


def write(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_jsonl_contract(tmp_path):
    p = write(tmp_path, [
        json.dumps({"prompt": "2+2?", "answer": 4}),
        "",
        json.dumps({"question": "Pick", "id": "x", "choices": ["red", "blue"], "image": "a.png", "answer": "B"}),
    ])
    a, b = read_jsonl(p)
    assert (a.query.id, a.query.prompt, a.answer) == ("1", "2+2?", "4")
    # relative image paths resolve against the data file's folder
    assert (b.query.id, b.query.choices, b.query.images, b.answer) == ("x", ("red", "blue"), (str(tmp_path / "a.png"),), "B")


@pytest.mark.parametrize("lines,where", [
    (['{"prompt": "ok"}', '{"prompt": "bad",'], "line 2"),
    (['{"id": 1, "answer": "3"}'], "line 1, field 'prompt'"),
    (['{"prompt": ""}'], "line 1, field 'prompt'"),
    (['{"prompt": "a", "choices": "x"}'], "line 1, field 'choices'"),
    (['{"prompt": "a", "choices": [1, 2]}'], "line 1, field 'choices'"),
    (['{"prompt": "a", "id": "k"}', '{"prompt": "b", "id": "k"}'], "line 2, field 'id'"),
    (['[1, 2]'], "line 1"),
    (['{"prompt": "a", "answer": {"x": 1}}'], "line 1, field 'answer'"),
])
def test_bad_jsonl_names_file_line_field(tmp_path, lines, where):
    p = write(tmp_path, lines)
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    assert str(e.value).startswith(f"{p}, {where}")


def test_builtin_task_is_seeded_and_labelled():
    a = load_dataset("rg:basic_arithmetic", {"max_digits": 1, "operators": ["+"]}, size=5, seed=1)
    b = load_dataset("rg:basic_arithmetic", {"max_digits": 1, "operators": ["+"]}, size=5, seed=1)
    assert [i.query.prompt for i in a.items] == [i.query.prompt for i in b.items]
    assert all(i.answer is not None for i in a.items)
    item = a.items[0]
    assert a.scorer(item.answer, item) and not a.scorer(None, item)


def test_unknown_source_and_bad_task_args(tmp_path):
    with pytest.raises(DataError, match="not a file and not a built-in task"):
        load_dataset("nosuch:thing")
    with pytest.raises(DataError, match="field 'task_args'"):
        load_dataset("rg:basic_arithmetic", {"no_such_arg": 1}, size=2)


def test_yaml_then_flags_precedence(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("sampling:\n  n_votes: 6\n  n_train: 3\ngrpo:\n  lr: 0.001\nreward: ttrv\nttrv_unused: 1\n")
    with pytest.raises(ConfigError, match="unknown option 'ttrv_unused'"):
        config_from_args(build_parser().parse_args(["run", "--config", str(y)]))
    y.write_text("sampling:\n  n_votes: 6\n  n_train: 3\ngrpo:\n  lr: 0.001\nreward: ttrv\n")
    ns = build_parser().parse_args(["run", "--config", str(y), "--n-train", "2", "--ttrv-alpha", "0.5", "--seed", "3"])
    cfg = config_from_args(ns)
    assert (cfg.sampling.n_votes, cfg.sampling.n_train, cfg.grpo.lr) == (6, 2, 0.001)
    assert cfg.reward.reward == "ttrv" and cfg.reward.reward_params == {"ttrv": {"alpha": 0.5}} and cfg.run.seed == 3


def test_saved_config_round_trips(tmp_path):
    from ttrl.config import load_yaml, save_yaml

    cfg = apply_overrides(Config(), {"lr": 0.5, "task_args": {"max_digits": 1}}, "t")
    save_yaml(cfg, tmp_path / "c.yaml")
    assert apply_overrides(Config(), load_yaml(tmp_path / "c.yaml"), "c.yaml") == cfg


def test_config_errors():
    with pytest.raises(ConfigError, match="n_train"):
        apply_overrides(Config(), {"n_votes": 4, "n_train": 8}, "t")
    with pytest.raises(ConfigError, match="t: lr: expected float"):
        apply_overrides(Config(), {"lr": "fast"}, "t")
    with pytest.raises(ConfigError, match="not one of"):
        apply_overrides(Config(), {"finetune": "qlora"}, "t")


def test_help_documents_every_option_with_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    import dataclasses

    for cls in sections().values():
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            assert flag in text, flag
    assert text.count("(default:") >= sum(len(dataclasses.fields(c)) for c in sections().values())
    assert "--ttrv-alpha" in text and "--ttrv-form" in text


def test_cli_errors_name_the_problem(tmp_path, capsys):
    bad = write(tmp_path, ['{"prompt": "1+1?"}', '{"promt": "2+2?"}'])
    assert main(["run", "--data", str(bad), "--out", str(tmp_path / "o1")]) == 2
    assert f"{bad}, line 2, field 'prompt'" in capsys.readouterr().err
    assert main(["run", "--reward", "majorty", "--out", str(tmp_path / "o2")]) == 2
    assert "unknown reward 'majorty'" in capsys.readouterr().err
    y = tmp_path / "bad.yaml"
    y.write_text("grpo:\n  lr: [1\n")
    assert main(["run", "--config", str(y), "--out", str(tmp_path / "o3")]) == 2
    assert f"{y}, line" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_a_run(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "summary.json").write_text("{}")
    assert main(["run", "--out", str(tmp_path / "o")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_rewards_command_lists_every_reward(capsys):
    from ttrl.rewards import all_rewards

    assert main(["rewards"]) == 0
    out = capsys.readouterr().out
    for name in all_rewards():
        assert name in out


def test_stream_reader_yields_items_and_errors_line_by_line():
    import io

    from ttrl.data import DataError, Item, iter_jsonl

    stream = io.StringIO('{"prompt": "a", "id": "x"}\n\nnot json\n{"answer": 1}\n{"prompt": "b"}\n')
    lines, out = zip(*iter_jsonl("-", stream=stream))
    assert lines == (1, 3, 4, 5)
    assert [type(o) for o in out] == [Item, DataError, DataError, Item]
    assert str(out[1]).startswith("<stdin>, line 3:") and str(out[2]).startswith("<stdin>, line 4, field 'prompt'")
    assert out[3].query.id == "5"
