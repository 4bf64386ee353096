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
    def __init__(self, path: str | Path, cfg: Config):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, self.path / "config.yaml")
        self._files: dict[str, Any] = {}

    def append(self, name: str, row: dict[str, Any]) -> None:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = (self.path / name).open("a", encoding="utf-8")
        f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        f.flush()

    def write_json(self, name: str, obj: dict[str, Any]) -> None:
        tmp = self.path / (name + ".tmp")
        tmp.write_text(json.dumps({k: _clean(v) for k, v in obj.items()}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / name)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
