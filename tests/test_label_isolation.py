"""Structural guarantee: labels cannot reach a reward or an update.

Adaptation code is typed on `Query`, which has no label field, and never imports `Item` (the type
that carries labels) nor reads an `.answer`/`.label` attribute. The behavioural check (changing the
labels changes nothing but label metrics) is in test_end_to_end.py."""
import ast
import dataclasses
import inspect
from pathlib import Path

import ttrl
from ttrl.data import Query
from ttrl.rewards import Group
from ttrl.trainer import Trainer

PKG = Path(ttrl.__file__).parent
ADAPTATION_CODE = ["trainer.py", "image_trainer.py", "rubric.py", "grpo.py", "prompting.py", "rollout.py", *[f"{d}/{f.name}" for d in ("rewards", "policy", "extractors")
                                                              for f in sorted((PKG / d).glob("*.py"))]]


def test_query_and_group_have_no_label_field():
    assert {f.name for f in dataclasses.fields(Query)} == {"id", "prompt", "choices", "images", "audio"}
    assert {f.name for f in dataclasses.fields(Group)} == {"query", "responses", "answers", "classes", "token_stats"}


def test_trainer_takes_queries_only():
    sig = inspect.signature(Trainer.step)
    assert list(sig.parameters) == ["self", "queries"]
    assert "Query" in str(sig.parameters["queries"].annotation)


def test_adaptation_code_never_touches_labels():
    assert len(ADAPTATION_CODE) > 10
    for rel in ADAPTATION_CODE:
        tree = ast.parse((PKG / rel).read_text(), filename=rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"answer", "label", "meta"}, f"{rel}:{node.lineno} reads .{node.attr}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = {a.name for a in node.names}
                assert not names & {"Item", "Dataset", "evaluate", "session"}, f"{rel}:{node.lineno} imports {names}"
