"""The run folder: config.yaml, metrics.jsonl, predictions.jsonl, summary.json, ...

JSONL files are appended and flushed line by line as results are produced, so a crash never
loses finished work; summary.json and checkpoints are written atomically (temp file, then rename).
A kill can still tear the last line of a JSONL file: on --resume every JSONL output is cut back to
its whole rows before anything is appended (`repairs` says what was dropped).

A marker file identifies a folder a run wrote, so `--overwrite` never deletes anything else.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, save_yaml

log = logging.getLogger(__name__)

MARKER = ".ttrl-run"  # written first into every run folder
OUTPUTS = frozenset({"config.yaml", "summary.json", "checkpoint.pt", "metrics.jsonl", "predictions.jsonl",
                     "events.jsonl", "base.jsonl", "base_votes.jsonl", "resets.jsonl", "report.html",
                     "rubrics.jsonl", "grid.png"})  # the last two: text-to-image runs (protocols/images.py)
OUTPUT_DIRS = frozenset({"tensorboard", "wandb", "images"})  # written by --log (loggers.py); images: text-to-image
# what counts as work done; config.yaml and events.jsonl (bad-input reports at load) come before any, and a
# failed run still gets a report.html
RESULTS = OUTPUTS - {"config.yaml", "events.jsonl", "report.html"}


def _ours(name: str) -> bool:
    return name in OUTPUTS or name in OUTPUT_DIRS or name == MARKER or (name.endswith(".tmp") and name[:-4] in OUTPUTS)


def folder_state(path: str | Path) -> str:
    """missing | file | empty | fresh (a run folder without results: the run failed before doing any
    work) | run (a run folder with results) | foreign (holds something a run did not write)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "file"
    entries = list(path.iterdir())
    if not entries:
        return "empty"
    names = {p.name for p in entries}
    if any((p.is_dir() and p.name not in OUTPUT_DIRS) or not _ours(p.name) for p in entries):
        return "foreign"
    if MARKER not in names and not ("config.yaml" in names and len(names) > 1):
        return "foreign"  # no marker (folders of older versions): config.yaml plus outputs, nothing else
    return "run" if names & RESULTS else "fresh"


def foreign_files(path: Path) -> list[str]:
    return sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if p.is_dir() or not _ours(p.name))


def prepare(path: str | Path, overwrite: bool = False) -> Path:
    """Make `path` ready for a new run: create it, reuse it if a failed run left it without results, or
    (overwrite) delete the outputs of the run that wrote it. Anything else is refused, untouched."""
    path = Path(path)
    state = folder_state(path)
    if state == "file":
        raise ConfigError(f"{path}: is a file; --out takes a folder")
    if state == "foreign":
        names = foreign_files(path) or sorted(p.name for p in path.iterdir())
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ConfigError(f"{path}: not a ttrl run folder (it holds {shown}); choose another --out "
                          "(--overwrite only ever replaces a folder that a run wrote)")
    if state == "run" and not overwrite:
        if (path / "summary.json").exists():
            raise ConfigError(f"{path}: holds a finished run; pass --overwrite to replace it or choose another --out")
        raise ConfigError(f"{path}: holds an unfinished run; continue it with --resume {path}, replace it with "
                          "--overwrite, or choose another --out")
    if state in ("run", "fresh"):
        for p in path.iterdir():  # _ours only, by folder_state
            shutil.rmtree(p) if p.name in OUTPUT_DIRS and p.is_dir() else p.unlink()
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / MARKER).write_text(json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the run folder here ({e.strerror})") from None
    return path


def check_resumable(path: str | Path) -> None:
    """A folder --resume can continue: a run folder whose checkpoint (if any) is whole. Cheap (torch.save
    writes a zip whose directory is at the end, so a truncated file is seen without loading it)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"--resume {path}: no such run folder")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"--resume {path}: not a run folder (no config.yaml)")
    p = path / "checkpoint.pt"
    if p.exists() and not zipfile.is_zipfile(p):
        raise ConfigError(f"{p}: damaged or truncated ({p.stat().st_size} bytes), so the run cannot be resumed "
                          "from it; start it again with --overwrite")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _row(line: bytes) -> dict | None:
    """The JSON object on this line, or None for a fragment (blank lines are None too)."""
    try:
        row = json.loads(line) if line.strip() else None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return row if isinstance(row, dict) else None


class RunDir:
    def __init__(self, path: str | Path, cfg: Config, resume: bool = False):
        self.path = Path(path)
        self._files: dict[str, Any] = {}
        self.repairs: list[dict[str, Any]] = []  # torn rows dropped on resume, for events.jsonl
        self.logger = None  # an experiment tracker (ttrl.loggers) that also gets every row written
        # set by run.run's Ctrl-C handler: the next row written raises KeyboardInterrupt again (see there)
        self.interrupt_pending = False
        if resume:
            check_resumable(self.path)
            self._repair()
        else:
            prepare(self.path)  # refuses a folder holding results or anything a run did not write
            save_yaml(cfg, self.path / "config.yaml")

    def _repair(self) -> None:
        """Keep only whole rows of every JSONL output. Appending after a torn last line would glue the next
        row onto the fragment, and readers would stop there."""
        for p in sorted(self.path.glob("*.jsonl")):
            data = p.read_bytes()
            lines = data.split(b"\n")
            keep = [ln for ln in lines if _row(ln) is not None]
            torn = [(n, ln) for n, ln in enumerate(lines, start=1) if ln.strip() and _row(ln) is None]
            if not torn and (not data or data.endswith(b"\n")):
                continue
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_bytes(b"".join(ln + b"\n" for ln in keep))
            os.replace(tmp, p)
            for n, ln in torn:
                msg = f"{p.name}, line {n}: dropped a torn row ({len(ln)} bytes, a write cut short by a kill)"
                log.warning("%s", msg)
                self.repairs.append({"file": p.name, "line": n, "bytes": len(ln), "reason": msg})

    def read(self, name: str) -> list[dict[str, Any]]:
        """Rows written so far (whole rows only: a row torn by a kill is skipped)."""
        p = self.path / name
        if not p.exists():
            return []
        return [row for row in map(_row, p.read_bytes().split(b"\n")) if row is not None]

    def rewrite(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Replace a JSONL file atomically (on resume: drop rows past the last checkpoint)."""
        f = self._files.pop(name, None)
        if f is not None:
            f.close()
        tmp = self.path / (name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, self.path / name)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        import torch

        tmp = self.path / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path / "checkpoint.pt")  # atomic: a kill leaves the old or the new one

    def load_checkpoint(self) -> dict[str, Any] | None:
        import pickle

        import torch

        p = self.path / "checkpoint.pt"
        if not p.exists():
            return None
        try:
            return torch.load(p, weights_only=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            raise ConfigError(f"{p}: damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}), so the "
                              "run cannot be resumed from it; start it again with --overwrite") from None

    def append(self, name: str, row: dict[str, Any]) -> None:
        if self.interrupt_pending:
            self.interrupt_pending = False
            raise KeyboardInterrupt
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = (self.path / name).open("a", encoding="utf-8")
        f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        f.flush()
        if self.logger is not None:
            self.logger.record(name, row)

    def write_json(self, name: str, obj: dict[str, Any]) -> None:
        tmp = self.path / (name + ".tmp")
        tmp.write_text(json.dumps({k: _clean(v) for k, v in obj.items()}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / name)
        if self.logger is not None:
            self.logger.record(name, obj)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self.logger is not None:
            self.logger.close()
            self.logger = None
