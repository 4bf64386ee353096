"""A llama.cpp rollout engine, behind `decoder: llamacpp`.

- The policy's base weights are exported once to GGUF (f32; or f16 / q8_0, which are not exact).
- Its LoRA adapter is re-exported whenever the weights have changed since the last rollout (a few MB).
- The N samples of each prompt decode as parallel llama.cpp sequences that share the prompt's KV cells (one
  prefill per prompt), and a finished sequence simply leaves the next batch.
- Logits come back to torch, where the lean loop's own sampler (decode.pick) and token statistics run.
  A seed, top_p and the recorded log-probs therefore mean the same thing on every decoder.

F32 keeps the sampler the policy: the weights are the same numbers, only summation order differs (greedy tokens
match transformers, tested), so nothing here is off-policy the way a quantized or bf16 rollout engine is.
The adapter keeps the LoRA scaling folded into lora_b (alpha 0 tells llama.cpp to apply it as is).

Covers llama-architecture text models (SmolLM2, Llama 2/3 without rope scaling, Mistral); others get a clear error.
Needs `llama-cpp-python`, a source build (see README).
"""
from __future__ import annotations

import contextlib
import ctypes
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from .decode import Decoded, pick, token_stats

# transformers model_type -> (GGUF architecture, whether q/k rows are permuted for llama.cpp's rope layout)
ARCHITECTURES = {"llama": ("llama", True), "mistral": ("llama", True)}


def _import():
    try:
        import llama_cpp
    except ImportError as e:  # optional: a source build
        raise ConfigError('decoder "llamacpp" needs llama-cpp-python: CMAKE_ARGS="-DGGML_NATIVE=OFF" '
                          'pip install llama-cpp-python (a source build, about 5 minutes on 2 cores)') from e
    return llama_cpp


def check_supported(model) -> None:
    """Fail before any work when llama-cpp-python is missing or the model or its adapter cannot be exported."""
    _import()
    lora_layers(model, _Layout(model.config))


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
            if active and getattr(m, "lora_variant", None):  # as HFCausalPolicy._rollout_weights tells them apart
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


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet(level, text, user_data):  # llama.cpp logs every load to stderr; warnings surface as errors instead
    pass


class LlamaCppEngine:
    """One llama.cpp model (the exported base) plus the current adapter, and a context sized on demand."""

    def __init__(self, model, tokenizer, threads: int, weights: str = "f32"):
        self.L = L = _import()
        L.llama_log_set(_quiet, None)
        L.llama_backend_init()
        self.layout = _Layout(model.config)
        self._dir = tempfile.TemporaryDirectory(prefix="ttrl-llamacpp-")
        base = Path(self._dir.name) / "base.gguf"
        export_base(model, tokenizer, self.layout, base, weights)
        self.exact = weights == "f32"
        self.model = L.llama_model_load_from_file(str(base).encode(), L.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load the exported model {base}")
        with contextlib.suppress(OSError):
            base.unlink()  # the loader's mmap keeps the pages; the disk copy is not needed again
        self.vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.threads = threads
        self.ctx = self.batch = self.adapter = None
        self._cells = self._seqs = self._tokens = 0
        self._version = None
        self._n_adapters = 0

    # -- weights -----------------------------------------------------------------------------
    def sync(self, model) -> None:
        """Bring llama.cpp's adapter up to the policy's LoRA weights (skipped when nothing changed)."""
        layers = lora_layers(model, self.layout)
        version = tuple((id(m.lora_A[a].weight), m.lora_A[a].weight._version, m.lora_B[a].weight._version)
                        for _, m, a in layers)
        if version == self._version:
            return
        L = self.L
        path = Path(self._dir.name) / f"adapter-{self._n_adapters}.gguf"
        self._n_adapters += 1
        export_lora(layers, self.layout, path)
        adapter = L.llama_adapter_lora_init(self.model, str(path).encode())
        path.unlink()
        if not adapter:
            raise RuntimeError("llama.cpp could not load the exported LoRA adapter")
        if self.adapter is not None:
            L.llama_adapter_lora_free(self.adapter)
        self.adapter, self._version = adapter, version
        if self.ctx is not None:
            self._attach()

    def _attach(self) -> None:
        L = self.L
        arr = (L.llama_adapter_lora_p_ctypes * 1)(self.adapter)
        if L.llama_set_adapters_lora(self.ctx, arr, 1, (ctypes.c_float * 1)(1.0)) != 0:
            raise RuntimeError("llama.cpp refused the LoRA adapter")

    def _context(self, cells: int, seqs: int, tokens: int) -> None:
        """A context with room for `cells` KV cells over `seqs` sequences and `tokens` per decode call."""
        if self.ctx is not None and cells <= self._cells and seqs <= self._seqs and tokens <= self._tokens:
            return
        L = self.L
        self.close_context()
        cells, seqs, tokens = max(cells, self._cells), max(seqs, self._seqs), max(tokens, self._tokens, 64)
        if seqs > L.llama_max_parallel_sequences():
            raise ConfigError(f"llama.cpp decodes at most {L.llama_max_parallel_sequences()} sequences at once; "
                             f"lower the rollout batch_size (asked for {seqs})")
        p = L.llama_context_default_params()
        p.n_ctx = -(-cells // 256) * 256
        p.n_batch = p.n_ubatch = tokens
        p.n_seq_max = seqs
        p.kv_unified = True  # copied prompt cells are shared, not duplicated
        if self.exact:  # llama.cpp's CPU flash attention and f16 cache move logits by ~1e-3 relative; without
            # them the logits agree with transformers to ~2e-6. Quantized weights keep both (15% faster at 8 rows).
            p.type_k = p.type_v = L.GGML_TYPE_F32
            p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        p.n_threads = p.n_threads_batch = self.threads
        self.ctx = L.llama_init_from_model(self.model, p)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.batch = L.llama_batch_init(tokens, 0, 1)
        self._cells, self._seqs, self._tokens = cells, seqs, tokens
        if self.adapter is not None:
            self._attach()

    def close_context(self) -> None:
        if self.ctx is not None:
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
            self.ctx = self.batch = None

    def close(self) -> None:
        self.close_context()
        if self.model is not None:
            if self.adapter is not None:
                self.L.llama_adapter_lora_free(self.adapter)
            self.L.llama_model_free(self.model)
            self.model = self.adapter = None
        self._dir.cleanup()

    def __del__(self):
        try:
            self.close()
        except (AttributeError, TypeError):  # interpreter shutdown: module globals and bindings may be gone
            return

    # -- decoding ----------------------------------------------------------------------------
    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> torch.Tensor:
        """One llama_decode over (token, position, sequence, wants logits) entries; the logits rows asked for."""
        b = self.batch
        for j, (tok, pos, seq, out) in enumerate(entries):
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = tok, pos, 1, out
            b.seq_id[j][0] = seq
        b.n_tokens = len(entries)
        if self.L.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        n_out = sum(e[3] for e in entries)
        return torch.from_numpy(np.ctypeslib.as_array(self.L.llama_get_logits(self.ctx), shape=(n_out, self.vocab)))

    @torch.no_grad()
    def sample(self, prompts: list[list[int]], n: int, *, temperature: float | None, top_p: float,
               max_new_tokens: int, eos_ids: set[int], seed: int, want_stats: bool = False) -> Decoded:
        """n continuations of each prompt (token ids), prompt-major, as decode.sample returns them. Unless the
        weights are exact (f32), each row also carries its tokens' log-probs under this sampler, at the
        sampling temperature, for the update's importance correction."""
        rows = len(prompts) * n
        prefill = sum(len(p) for p in prompts)
        self._context(prefill + rows * max_new_tokens + 1, rows, max(prefill, rows))
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)
        entries = [(tok, i, p * n, i == len(ids) - 1) for p, ids in enumerate(prompts) for i, tok in enumerate(ids)]
        logits = self._decode(entries).repeat_interleave(n, dim=0)
        mem = self.L.llama_get_memory(self.ctx)
        for p in range(len(prompts)):
            for s in range(1, n):  # the prompt's cells now belong to all n sequences too
                self.L.llama_memory_seq_cp(mem, p * n, p * n + s, -1, -1)

        generator = None if temperature is None else torch.Generator().manual_seed(seed)
        eos = torch.tensor(sorted(eos_ids))
        tokens: list[list[int]] = [[] for _ in range(rows)]
        stats = [([], [], []) for _ in range(rows)] if want_stats else None
        own = [[] for _ in range(rows)] if not self.exact and temperature is not None else None
        finished = [False] * rows
        alive = list(range(rows))
        for t in range(max_new_tokens):
            tok = pick(logits, temperature, top_p, generator)
            if stats is not None:
                for k, s in enumerate(token_stats(logits, tok, temperature)):
                    for r, v in zip(alive, s.tolist()):
                        stats[r][k].append(v)
            if own is not None:
                lp = torch.log_softmax(logits.float() / temperature, -1).gather(-1, tok[:, None]).squeeze(-1)
                for r, v in zip(alive, lp.tolist()):
                    own[r].append(v)
            ended = torch.isin(tok, eos).tolist()
            nxt = []
            for r, tk, e in zip(alive, tok.tolist(), ended):
                tokens[r].append(tk)
                if e:
                    finished[r] = True
                else:
                    nxt.append((r, tk))
            if not nxt or t == max_new_tokens - 1:
                break
            alive = [r for r, _ in nxt]
            logits = self._decode([(tk, len(prompts[r // n]) + t, r, True) for r, tk in nxt])
        rows_stats = None if stats is None else [tuple(np.asarray(c, dtype=np.float32) for c in s) for s in stats]
        own_lp = None if own is None else [np.asarray(r, dtype=np.float32) for r in own]
        return Decoded(tokens, finished, rows_stats, own_lp)
