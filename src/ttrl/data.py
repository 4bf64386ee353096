"""Items and the JSONL data contract.

An `Item` pairs what the model may see (`Query`) with the label (`answer`), which is used only
for evaluation. Adaptation code is typed on `Query`, which has no answer field at all, so a
label cannot reach a reward or an update by accident (tests/test_label_isolation.py).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input, with the file, line and field it came from."""

    def __init__(self, source: str, line: int | None, field_: str | None, message: str):
        where = source + (f", line {line}" if line is not None else "") + (f", field {field_!r}" if field_ else "")
        super().__init__(f"{where}: {message}")
        self.source, self.line, self.field = source, line, field_


@dataclass(frozen=True)
class Query:
    """Everything a policy, an extractor or a reward may see of an item. No label, by design."""

    id: str
    prompt: str
    choices: tuple[str, ...] | None = None
    images: tuple[str, ...] = ()
    audio: tuple[str, ...] = ()  # wav/flac/ogg paths, for speech models

    @property
    def modalities(self) -> frozenset[str]:
        """What the item carries besides text; a backend must read each of them."""
        return frozenset(m for m, paths in (("image", self.images), ("audio", self.audio)) if paths)


@dataclass(frozen=True)
class Item:
    query: Query
    answer: Any = None  # evaluation only; never passed to adaptation code
    meta: dict = field(default_factory=dict, compare=False)


Scorer = Callable[[str | None, Item], bool]


@dataclass
class Dataset:
    """Items plus how to score a predicted answer (task-specific scorers, e.g. reasoning-gym's)."""

    name: str
    items: list[Item]
    scorer: Scorer | None = None  # None: the extractor's equivalence against `answer`
    answer_type: str | None = None  # the source's own answer format (never inferred from labels)

    @property
    def has_labels(self) -> bool:
        return any(it.answer is not None for it in self.items)


def _as_str_tuple(value: Any, source: str, line: int, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(source, line, name, f"expected a string or a list of strings, got {value!r}")
    return tuple(value)


def parse_record(obj: Any, source: str, line: int, base_dir: Path | None = None) -> Item:
    """One JSONL object -> Item, validating the contract: prompt|question, id, choices, image, audio, answer, and
    spec (a scene for the text-to-image checker, kept beside the label in Item.meta)."""
    if not isinstance(obj, dict):
        raise DataError(source, line, None, f"expected a JSON object, got {type(obj).__name__}")
    key = "prompt" if "prompt" in obj else "question" if "question" in obj else None
    if key is None:
        raise DataError(source, line, "prompt", "missing required field (or 'question')")
    prompt = obj[key]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(source, line, key, f"must be a non-empty string, got {prompt!r}")
    choices = obj.get("choices")
    if choices is not None:
        choices = _as_str_tuple(choices, source, line, "choices")
        if len(choices) < 2 or len(choices) > 26:
            raise DataError(source, line, "choices", f"needs 2 to 26 options, got {len(choices)}")
    images = obj.get("image", obj.get("images"))
    images = () if images is None else _as_str_tuple(images, source, line, "image")
    audio = obj.get("audio")
    audio = () if audio is None else _as_str_tuple(audio, source, line, "audio")
    if base_dir is not None:  # relative image and audio paths are relative to the data file
        images = tuple(str(base_dir / p) if not Path(p).is_absolute() else p for p in images)
        audio = tuple(str(base_dir / p) if not Path(p).is_absolute() else p for p in audio)
    if "answer" in obj and obj["answer"] is not None and not isinstance(obj["answer"], (str, int, float)):
        raise DataError(source, line, "answer", f"must be a string or a number, got {obj['answer']!r}")
    item_id = str(obj.get("id", line))
    answer = obj.get("answer")
    meta = {}
    if obj.get("spec") is not None:  # a text-to-image prompt's structured scene, for the pixel checker only
        from .scenes import SceneSpec

        meta["spec"] = SceneSpec.from_dict(obj["spec"], source, line).to_dict()
    return Item(Query(item_id, prompt, choices, images, audio), None if answer is None else str(answer), meta)


def iter_jsonl(path: str | Path, stream=None):
    """Yield (line number, Item or DataError) per non-blank line, reading as lines arrive (a file, or
    `stream` such as stdin for path "-"), so an online run answers items while later ones are still
    being written and one bad line costs only that line. Lines are read as bytes and decoded one by
    one, so a byte that is not UTF-8 is that line's error, not the end of the stream."""
    import sys

    source = "<stdin>" if str(path) == "-" else str(path)
    base_dir = None if source == "<stdin>" else Path(path).parent
    if stream is not None:
        f = stream
    elif source == "<stdin>":
        if sys.stdin is None or sys.stdin.closed:
            raise DataError(source, None, None, "standard input is closed (nothing to read)")
        f = getattr(sys.stdin, "buffer", sys.stdin)
    else:
        f = _open(Path(path))
    try:
        for n, raw in enumerate(f, start=1):
            if isinstance(raw, bytes):
                try:
                    raw = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield n, DataError(source, n, None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})")
                    continue
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                yield n, DataError(source, n, None, f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            try:
                yield n, parse_record(obj, source, n, base_dir)
            except DataError as e:
                yield n, e
    finally:
        if stream is None and source != "<stdin>":
            f.close()


def _open(path: Path):
    """The file as a binary stream, or a DataError naming what is wrong with the path."""
    if path.is_dir():
        raise DataError(str(path), None, None, "is a folder, not a JSONL file")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(str(path), None, None, "no such file") from None
    except OSError as e:
        raise DataError(str(path), None, None, f"cannot read ({e.strerror})") from None


def read_jsonl(path: str | Path) -> list[Item]:
    """All items of a file; the first bad line is an error naming file, line and field."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, None, "no such file")
    items, seen = [], {}  # a folder or an unreadable file: iter_jsonl raises naming it
    for n, entry in iter_jsonl(path):
        if isinstance(entry, DataError):
            raise entry
        if entry.query.id in seen:
            raise DataError(str(path), n, "id", f"duplicate id {entry.query.id!r} (first on line {seen[entry.query.id]})")
        seen[entry.query.id] = n
        items.append(entry)
    if not items:
        raise DataError(str(path), None, None, "no items")
    return items
