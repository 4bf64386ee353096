"""The run folder: config.yaml, metrics.jsonl, predictions.jsonl, summary.json.

JSONL files are appended and flushed line by line as results are produced, so a crash never
loses finished work; summary.json is written atomically (temp file, then rename).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .config import Config, save_yaml


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunDir:
    def __init__(self, path: str | Path, cfg: Config, resume: bool = False):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            save_yaml(cfg, self.path / "config.yaml")
        self._files: dict[str, Any] = {}
        self.logger = None  # an experiment tracker (ttrl.loggers) that also gets every row written

    def read(self, name: str) -> list[dict[str, Any]]:
        """Rows written so far; a torn last line (the process was killed mid-write) is dropped."""
        p = self.path / name
        if not p.exists():
            return []
        rows = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

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
        import torch

        p = self.path / "checkpoint.pt"
        return torch.load(p, weights_only=False) if p.exists() else None

    def append(self, name: str, row: dict[str, Any]) -> None:
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
