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
from .base import Decoded, Engine, SampleOptions, pick, register_engine, token_stats
from .llamacpp_export import _Layout, export_base, export_lora, lora_layers


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


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet(level, text, user_data):  # llama.cpp logs every load to stderr; warnings surface as errors instead
    pass


class LlamaCppRunner:
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


def _llamacpp_fits(backend) -> str | None:
    if backend.modalities:
        return f"llama.cpp samples text-only models; {backend.backend_name!r} models take {sorted(backend.modalities)}"
    if backend.cfg.finetune != "lora":
        return ('it syncs a LoRA adapter each step; use finetune lora (full fine-tuning would re-export the whole '
                'model every step)')
    return None


@register_engine("llamacpp", supports=_llamacpp_fits,
                 help="llama.cpp sequences on F32 (exact) or f16/q8_0 weights, the LoRA adapter synced each step "
                      "(llama-architecture text models; needs llama-cpp-python)")
class LlamaCppEngine(Engine):
    def __init__(self, backend):
        super().__init__(backend)
        check_supported(backend.model)  # before any work: a missing build or an unexportable model
        self._runners: dict[str, LlamaCppRunner] = {}  # by weight type, each built on first use

    @contextlib.contextmanager
    def session(self):
        """The runner for the configured weight type (exports the base weights once), its adapter synced."""
        b = self.backend
        weights = b.cfg.llamacpp_weights
        if weights not in self._runners:
            self._runners[weights] = LlamaCppRunner(b.model, b.tokenizer, threads=torch.get_num_threads(),
                                                    weights=weights)
        self._runner = self._runners[weights]
        self._runner.sync(b.model)
        yield

    def sample(self, prompts, n: int, opts: SampleOptions):
        enc = self.backend.encode(prompts)
        ids = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
        dec = self._runner.sample(ids, n, temperature=opts.temperature, top_p=opts.top_p,
                                  max_new_tokens=opts.max_new_tokens, eos_ids=opts.eos_ids, seed=opts.seed,
                                  want_stats=opts.want_stats)
        return dec.samples([tuple(i) for i in ids], n)

    def close(self) -> None:
        """Free the llama.cpp runners (their contexts and exported weights) now rather than at exit."""
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
