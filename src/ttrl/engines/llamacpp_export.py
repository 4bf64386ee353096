"""Export of a Hugging Face llama-architecture model and its LoRA adapter to GGUF, for the llama.cpp engine.

The base weights go out once (f32 exact; f16 / q8_0 smaller and not exact); the adapter whenever it changed,
with the LoRA scaling folded into lora_b (alpha 0 tells llama.cpp to apply it as is). Names come from gguf-py's
own HF -> GGUF map; q/k rows get llama.cpp's rope permutation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ConfigError

# transformers model_type -> (GGUF architecture, whether q/k rows are permuted for llama.cpp's rope layout)
ARCHITECTURES = {"llama": ("llama", True), "mistral": ("llama", True)}


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotary layout (halves) -> llama.cpp's (interleaved pairs), per head, on the output rows."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class _Layout:
    """Name mapping HF -> GGUF for one model, and which rows need the rope permutation."""

    def __init__(self, config):
        import gguf

        mt = getattr(config, "model_type", None)
        if mt not in ARCHITECTURES:
            raise ConfigError(f'decoder "llamacpp" supports model types {sorted(ARCHITECTURES)}; this model is '
                             f'{mt!r} (use decoder lean or hf)')
        rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ConfigError(f'decoder "llamacpp" does not export rope scaling {rope.get("rope_type")!r}; '
                             'use decoder lean or hf')
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ConfigError('decoder "llamacpp" does not export linear biases; use decoder lean or hf')
        self.config = config
        self.arch, permute = ARCHITECTURES[mt]
        arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == self.arch)
        self.names = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)
        heads, kv = config.num_attention_heads, config.num_key_value_heads
        self.permute = {"attn_q": heads, "attn_k": kv} if permute else {}

    def gguf_name(self, hf_name: str) -> str | None:
        return self.names.get_name(hf_name, try_suffixes=(".weight", ".bias"))

    def rows(self, gguf_name: str, w: np.ndarray) -> np.ndarray:
        kind = gguf_name.split(".")[-2]
        return _permute(w, self.permute[kind]) if kind in self.permute else w


def _clean(name: str) -> str:
    """peft's module path -> the plain transformers parameter name."""
    return name.replace(".base_layer", "").removeprefix("base_model.model.")


WEIGHTS = ("f32", "f16", "q8_0")


def export_base(model, tokenizer, layout: _Layout, path: Path, weights: str = "f32") -> None:
    """The base model's weights (LoRA excluded) as a GGUF llama.cpp loads: f32 (exact), or f16 / q8_0 for the
    matrices (norms stay f32). The vocabulary is written only so the loader accepts the file: prompts arrive
    as token ids from the HF tokenizer."""
    import gguf

    if weights not in WEIGHTS:
        raise ValueError(f"llama.cpp weights must be one of {WEIGHTS}, got {weights!r}")

    c = layout.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = getattr(c, "rope_parameters", None) or {}
    theta = getattr(c, "rope_theta", None) or rope.get("rope_theta", 10000.0)
    state = {_clean(k): v for k, v in model.state_dict().items() if "lora_" not in k}
    vocab = state["model.embed_tokens.weight"].shape[0]

    w = gguf.GGUFWriter(str(path), layout.arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(theta))
    w.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    w.add_vocab_size(vocab)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[weights])
    tokens = tokenizer.convert_ids_to_tokens(list(range(min(vocab, len(tokenizer)))))
    tokens += [f"<unused{i}>" for i in range(len(tokens), vocab)]
    special = set(tokenizer.all_special_ids)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t if t is not None else f"<unused{i}>" for i, t in enumerate(tokens)])
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(vocab)])
    w.add_token_merges(_merges(tokenizer))
    if tokenizer.eos_token_id is not None:
        w.add_eos_token_id(tokenizer.eos_token_id)
    tied = getattr(c, "tie_word_embeddings", False)
    for name, t in state.items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp reads the output projection from token_embd when output is absent
        g = layout.gguf_name(name)
        if g is None:
            raise ValueError(f'decoder "llamacpp": no GGUF name for weight {name!r} of {c.model_type}')
        a = layout.rows(g, t.detach().float().cpu().numpy())
        if weights == "f32" or a.ndim < 2:
            w.add_tensor(g, a)
        elif weights == "f16":
            w.add_tensor(g, a.astype(np.float16))
        else:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(g, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    _write(w)


def _write(w) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _merges(tokenizer) -> list[str]:
    """The BPE merges (the loader insists on the key; an empty list is not written, so fall back to one)."""
    import json

    try:
        merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"].get("merges") or []
    except (AttributeError, KeyError, ValueError):
        merges = []
    return [m if isinstance(m, str) else " ".join(m) for m in merges] or ["a b"]


def lora_layers(model, layout: _Layout):
    """(GGUF tensor name, LoRA layer, adapter name) for each active LoRA layer of a peft model."""
    from peft.tuners.lora import LoraLayer

    out = []
    for name, m in model.named_modules():
        if isinstance(m, LoraLayer):
            active = [a for a in m.active_adapters if a in m.lora_A]
            if len(active) > 1:
                raise ConfigError('decoder "llamacpp" exports one active LoRA adapter at a time')
            if active and getattr(m, "lora_variant", None):  # as backends/lora.sampling_weights tells them apart
                raise ConfigError('decoder "llamacpp" does not export DoRA or other LoRA variants')
            g = layout.gguf_name(_clean(name) + ".weight")
            if active and g is None:
                raise ConfigError(f'decoder "llamacpp": no GGUF name for LoRA target {_clean(name)!r}')
            out += [(g, m, a) for a in active]
    return out


def export_lora(layers, layout: _Layout, path: Path) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), layout.arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)  # 0: llama.cpp applies lora_b as given (scaling folded in)
    for g, m, a in layers:
        lora_a = m.lora_A[a].weight.detach().float().cpu().numpy()
        lora_b = (m.lora_B[a].weight.detach().float() * m.scaling[a]).cpu().numpy()
        w.add_tensor(g + ".lora_a", lora_a)
        w.add_tensor(g + ".lora_b", layout.rows(g, lora_b))
    _write(w)
