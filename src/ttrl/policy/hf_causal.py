"""Policy backend for Hugging Face causal language models (text only), with LoRA via peft."""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Sequence

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from ..config import ConfigError, ModelConfig
from ..data import Query
from ..prompting import user_message
from ..rollout import Completion, Prompt, TokenStats
from .base import autocast_ctx, pick_device, resolve_dtypes
from .decode import positions, sample
from .decode import token_stats as step_token_stats
from .zoo import resolve_model

log = logging.getLogger(__name__)


class HFCausalPolicy:
    def __init__(self, cfg: ModelConfig, need_reference: bool = True, seed: int = 0):
        """`seed` fixes the adapter's random init (lora_A), so the same seed trains the same run in any process."""
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.dtype, self.autocast = resolve_dtypes(self.device, cfg.dtype, cfg.autocast)
        path = resolve_model(cfg.model)
        self.tokenizer = self._load_tokenizer(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        model = self._load_model(path).to(self.device)
        self.eos_ids = self._eos_ids(model)
        self._ref_model = None
        self._engines = {}  # llama.cpp rollout engines by weight type, each built on first use
        if cfg.finetune == "lora":
            from peft import LoraConfig, get_peft_model

            targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [
                t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=targets, exclude_modules=self._lora_exclude(), task_type="CAUSAL_LM")
            cuda = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):  # neither reads nor moves the caller's global generators
                torch.manual_seed(seed)
                model = get_peft_model(model, lora)
            self._freeze(model)
        elif cfg.finetune == "full":
            if need_reference:  # full fine-tuning has no adapter to switch off: keep a frozen copy
                self._ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        else:
            raise ValueError(f"finetune must be lora or full, got {cfg.finetune!r}")
        self.model = model
        self.model.eval()  # no dropout in rollouts; LoRA dropout defaults to 0 for the same reason
        if cfg.gradient_checkpointing:
            self._enable_checkpointing(model.get_base_model() if hasattr(model, "get_base_model") else model)
        if cfg.decoder == "llamacpp":
            from .llamacpp import check_supported

            if cfg.finetune != "lora":
                raise ConfigError('decoder "llamacpp" syncs a LoRA adapter each step; use finetune lora '
                                  '(full fine-tuning would re-export the whole model every step)')
            check_supported(model)

    # -- hooks a subclass overrides (vision-language models: hf_vlm.py) ---------------------------
    def _load_tokenizer(self, path):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)

    def _load_model(self, path):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)

    def _lora_exclude(self) -> str | None:
        """Modules LoRA must not touch (a regex; vision models keep their vision side out)."""
        return None

    def _freeze(self, model) -> None:
        """Which weights train besides the adapter (none for text models)."""

    def _user_content(self, query: Query, instruction: str):
        return user_message(query, instruction)

    def _encode(self, prompts: Sequence[Prompt]):
        return self.tokenizer([p.text for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)

    def _image_inputs(self, completions: Sequence[Completion]) -> dict:
        """Extra forward inputs (pixel values) for scoring completions; none for text models."""
        return {}

    def _eos_ids(self, model) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return {i for i in ids if i is not None}

    # -- prompts ---------------------------------------------------------------------------
    def render(self, query: Query, instruction: str) -> Prompt:
        messages = []
        if self.cfg.system_prompt:
            messages.append({"role": "system", "content": self.cfg.system_prompt})
        messages.append({"role": "user", "content": self._user_content(query, instruction)})
        template = getattr(self, "processor", self.tokenizer)
        if template.chat_template:
            return Prompt(template.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                          tuple(query.images))
        # base models without a chat template: plain text, answer follows
        texts = [self.cfg.system_prompt] if self.cfg.system_prompt else []
        return Prompt("\n\n".join(texts + [user_message(query, instruction)]) + "\n", tuple(query.images))

    def prompt_length(self, query: Query, instruction: str) -> int:
        """Tokens the rendered prompt takes (image tokens included), to check it against the context."""
        return int(self._encode([self.render(query, instruction)])["input_ids"].shape[1])

    # -- sampling --------------------------------------------------------------------------
    def _lean_supported(self) -> bool:
        """Whether the lean decode loop (decode.py) fits this model: plain 1-D positions."""
        return True

    def _use_lean(self) -> bool:
        if self.cfg.decoder == "hf":
            return False
        if self._lean_supported():
            return True
        if self.cfg.decoder == "lean":
            raise ValueError(f"decoder 'lean' does not support {type(self.model.base_model if hasattr(self.model, 'peft_config') else self.model).__name__}; use decoder hf or auto")
        return False

    @contextlib.contextmanager
    @torch.no_grad()
    def _rollout_weights(self):
        """Sample from transient copies of the linear weights: LoRA merged in (unmerged LoRA doubles the
        per-token cost) and pre-cast to the autocast dtype (autocast would otherwise re-cast every weight at
        every decoded token). Each copy holds exactly the values autocast computes with, and goes in as a new
        Parameter object that is swapped back afterwards, so base weights are never modified (peft's
        merge/unmerge round trip drifts in the last bits, which would make resumed runs differ from unbroken
        ones) and tied weights (embeddings / lm_head) stay untouched for the modules that share them."""
        from peft.tuners.lora import LoraLayer

        cast = self.autocast if self.cfg.cast_for_sampling else None
        swapped = []
        # linear layers inside a LoRA layer (its base layer, A and B) are handled by that layer
        inside = {id(sub) for m in self.model.modules() if isinstance(m, LoraLayer) for sub in m.modules() if sub is not m}
        for m in self.model.modules():
            names = []
            if isinstance(m, LoraLayer):
                if not self.cfg.merge_for_sampling or m.merged or getattr(m, "lora_variant", None):
                    continue  # DoRA and other variants keep their unmerged forward
                names = [a for a in m.active_adapters if a in m.lora_A]
                layer = m.get_base_layer()
            elif isinstance(m, torch.nn.Linear) and cast is not None and id(m) not in inside:
                layer = m
            else:
                continue
            if not names and cast is None:
                continue
            orig = layer._parameters["weight"]
            w = orig.detach().clone() if names else orig.detach()
            for a in names:
                w += m.get_delta_weight(a).to(w.dtype)
            if cast is not None and w.dtype != cast and w.is_floating_point():
                w = w.to(cast)
            layer._parameters["weight"] = torch.nn.Parameter(w, requires_grad=False)
            if names:
                m.merged_adapters.extend(names)
            swapped.append((m, layer, orig, names))
        try:
            yield
        finally:
            for m, layer, orig, names in reversed(swapped):
                layer._parameters["weight"] = orig
                for a in names:
                    m.merged_adapters.remove(a)

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt | str], n: int, *, temperature: float | None, top_p: float = 1.0,
                 max_new_tokens: int, batch_size: int, seed: int, token_stats: bool = False) -> list[list[Completion]]:
        prompts = [p if isinstance(p, Prompt) else Prompt(p) for p in prompts]
        engine = self._llamacpp() if self.cfg.decoder == "llamacpp" else None
        lean = engine is None and self._use_lean()
        per_chunk = max(1, batch_size // n)
        out: list[list[Completion]] = []
        weights = contextlib.nullcontext() if engine else self._rollout_weights()
        with weights, autocast_ctx(self.device, self.autocast):
            for k, start in enumerate(range(0, len(prompts), per_chunk)):
                chunk = prompts[start:start + per_chunk]
                opts = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
                        "eos_ids": self.eos_ids, "seed": seed * 7919 + k, "want_stats": token_stats}
                if engine is not None:  # llama.cpp sequences; the adapter was synced above
                    enc = self._encode(chunk)
                    ids = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
                    rows, stride = _rows_from_lean(engine.sample(ids, n, **opts)), 1
                elif lean:  # one prefill per prompt; the sampler repeats its cache n times
                    enc = self._encode(chunk).to(self.device)
                    rows, stride = _rows_from_lean(sample(self.model, dict(enc), n, **opts)), 1
                else:
                    if k == 0:
                        torch.manual_seed(seed)  # one seed per call: the same call gives the same samples
                    # each prompt repeated n times (rather than num_return_sequences) keeps images aligned
                    enc = self._encode([p for p in chunk for _ in range(n)]).to(self.device)
                    rows, stride = self._hf_generate(enc, temperature, top_p, max_new_tokens, token_stats), n
                for i, prompt in enumerate(chunk):  # row i * stride of the encoding holds prompt i
                    mask = enc["attention_mask"][i * stride].bool()
                    prompt_ids = tuple(enc["input_ids"][i * stride][mask].tolist())
                    group = []
                    for ids, finished, st, own in rows[i * n:(i + 1) * n]:
                        text = self.tokenizer.decode(ids, skip_special_tokens=True)
                        group.append(Completion(prompt_ids, tuple(ids), text, finished,
                                                None if st is None else TokenStats(*st), prompt.images, own))
                    out.append(group)
        return out

    def _llamacpp(self):
        """The llama.cpp engine for the configured weight type (built on first use: exports the base weights
        once), its adapter synced to the current LoRA weights."""
        weights = self.cfg.llamacpp_weights
        if weights not in self._engines:
            from .llamacpp import LlamaCppEngine

            self._engines[weights] = LlamaCppEngine(self.model, self.tokenizer, threads=torch.get_num_threads(),
                                                    weights=weights)
        engine = self._engines[weights]
        engine.sync(self.model)
        return engine

    def close(self) -> None:
        """Free the llama.cpp engines (their contexts and exported weights) now rather than at exit."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

    def _hf_generate(self, enc, temperature, top_p, max_new_tokens, token_stats):
        """transformers' generate: the fallback for models the lean loop does not cover."""
        kwargs = dict(do_sample=False) if temperature is None else dict(do_sample=True, temperature=temperature,
                                                                        top_p=top_p, top_k=0)
        gen = self.model.generate(**enc, **kwargs, max_new_tokens=max_new_tokens,
                                  pad_token_id=self.tokenizer.pad_token_id, output_logits=token_stats,
                                  return_dict_in_generate=True)
        width = enc["input_ids"].shape[1]
        new = gen.sequences[:, width:]
        stats = _token_stats(gen.logits, new) if token_stats else None
        rows = []
        for r in range(new.shape[0]):
            ids, finished = self._cut(new[r].tolist())
            rows.append((ids, finished, None if stats is None else tuple(a[r, :len(ids)] for a in stats), None))
        return rows

    def _cut(self, row: list[int]) -> tuple[list[int], bool]:
        for j, t in enumerate(row):
            if t in self.eos_ids:
                return row[:j + 1], True  # keep EOS: the policy learns when to stop
        return row, False

    # -- scoring ---------------------------------------------------------------------------
    def token_logprobs(self, completions: Sequence[Completion], *, temperature: float,
                       reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        model, ctx = self.model, torch.enable_grad()
        if reference:
            ctx = torch.no_grad()
            if self._ref_model is not None:
                model = self._ref_model
        lora_ref = reference and self._ref_model is None and hasattr(self.model, "disable_adapter")
        shared = self.cfg.share_prompt and self._lean_supported()
        with ctx, autocast_ctx(self.device, self.autocast), \
                self.model.disable_adapter() if lora_ref else contextlib.nullcontext():
            score = self._score_shared if shared else self._score_full
            logits, target, cmask = score(model, completions)
        logits = logits.float() / temperature  # the sampling distribution is softmax(z / T)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return logp * cmask, cmask

    @staticmethod
    def _enable_checkpointing(base) -> None:
        # replay puts decoder layers in training mode, and some layers apply dropout from their own flag
        dropouts = _dropouts(base.config.to_dict())
        if dropouts or not getattr(base, "supports_gradient_checkpointing", False):
            why = f"its config has dropout {dropouts}" if dropouts else "it does not support it"
            raise ConfigError(f"gradient_checkpointing: {type(base).__name__}: {why}")
        enable = getattr(base, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5.x; the older name is deprecated there
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @contextlib.contextmanager
    def _checkpointed(self, model):
        """Gradient checkpointing for one grad-enabled pass. transformers checkpoints a layer only in training mode,
        so the decoder layers alone are flipped (their dropout and attention submodules stay in eval mode, keeping
        the scored distribution the sampled one). A layer may keep a cache here: the completion pass only reads its
        prompt's (_PrefixCache), so a replayed layer sees the same keys."""
        layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True
                  and hasattr(m, "_can_checkpoint_with_cache")] \
            if self.cfg.gradient_checkpointing and torch.is_grad_enabled() else []
        for m in layers:
            m.training, m._can_checkpoint_with_cache = True, True
        try:
            yield
        finally:
            for m in layers:
                m.training = False
                del m._can_checkpoint_with_cache  # back to the class default

    def _completion_batch(self, completions: Sequence[Completion]):
        """Completion tokens right-padded [B, Lc] and their mask."""
        lc = max(max(len(c.ids) for c in completions), 1)
        ids = torch.full((len(completions), lc), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, c in enumerate(completions):
            ids[b, :len(c.ids)] = torch.tensor(c.ids, dtype=torch.long)
            mask[b, :len(c.ids)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _prompt_batch(self, completions: Sequence[Completion]):
        """The completions' prompt tokens left-padded [B, Lp] and their mask."""
        lp = max(len(c.prompt_ids) for c in completions)
        ids = torch.full((len(completions), lp), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, c in enumerate(completions):
            ids[b, lp - len(c.prompt_ids):] = torch.tensor(c.prompt_ids)
            mask[b, lp - len(c.prompt_ids):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _score_full(self, model, completions):
        """Logits for each completion token from one pass over prompt + completion per sequence."""
        pids, pmask = self._prompt_batch(completions)
        cids, cmask = self._completion_batch(completions)
        lc = cids.shape[1]
        ids = torch.cat([pids, cids], dim=1)
        attn = torch.cat([pmask, cmask], dim=1)
        with self._checkpointed(model):
            logits = model(input_ids=ids, attention_mask=attn, position_ids=positions(attn), logits_to_keep=lc + 1,
                           use_cache=False, **self._image_inputs(completions)).logits
        return logits[:, :-1], cids, cmask.float()

    def _score_shared(self, model, completions):
        """The same logits, with each distinct prompt run once: its KV cache (carrying gradients) is
        gathered for the completions that share it. The N samples of a group share their prompt, so the
        prompt costs one pass instead of N; mathematically identical to _score_full."""
        keys, owner, firsts = {}, [], []
        for b, c in enumerate(completions):
            k = (c.prompt_ids, c.images)
            if k not in keys:
                keys[k] = len(firsts)
                firsts.append(c)
            owner.append(keys[k])
        pids, pmask = self._prompt_batch(firsts)
        ppos = positions(pmask)
        out = model(input_ids=pids, attention_mask=pmask, position_ids=ppos, use_cache=True, logits_to_keep=1,
                    **self._image_inputs(firsts))
        rows = torch.tensor(owner, device=self.device)
        cache = out.past_key_values
        cache.batch_select_indices(rows)  # differentiable gather: gradients reach the prompt pass
        if self.cfg.gradient_checkpointing:
            _PrefixCache.adopt(cache)
        cids, cmask = self._completion_batch(completions)
        lc = cids.shape[1]
        cpos = ppos[rows, -1:] + 1 + torch.arange(lc, device=self.device)
        attn = torch.cat([pmask[rows], cmask], dim=1)
        with self._checkpointed(model):  # the prompt pass above writes its cache, so it is never replayed
            rest = model(input_ids=cids, attention_mask=attn, position_ids=cpos, past_key_values=cache,
                         use_cache=True).logits
        logits = torch.cat([out.logits[rows, -1:], rest[:, :-1]], dim=1)  # the prompt's last logit predicts token 0
        return logits, cids, cmask.float()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, path) -> None:
        self.model.save_pretrained(path)


class _PrefixCache(DynamicCache):
    """A prompt's KV cache that the completion pass reads without extending: update returns prompt + new keys and
    stores nothing, so a layer replayed by gradient checkpointing gets the same keys as the first time."""

    @classmethod
    def adopt(cls, cache: DynamicCache) -> None:
        """Make `cache` read-only in place; a clear error for caches it cannot represent (sliding windows, static
        or quantized caches)."""
        if type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer for layer in cache.layers):
            kinds = ", ".join(sorted({type(layer).__name__ for layer in cache.layers}))
            raise ConfigError(f"gradient_checkpointing with share_prompt needs a plain full-attention KV cache, got "
                              f"{type(cache).__name__} ({kinds}); set share_prompt false")
        cache.__class__ = cls  # same state, a read-only update

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        layer = self.layers[layer_idx]
        return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)


def _dropouts(config: dict) -> dict:
    """Non-zero dropout rates anywhere in a model config (nested sub-configs included)."""
    found = {}
    for k, v in config.items():
        if isinstance(v, dict):
            found.update(_dropouts(v))
        elif "drop" in str(k) and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            found[k] = v
    return found


def _rows_from_lean(dec) -> list[tuple]:
    """(tokens, finished, stats, sampler log-probs) per row of a Decoded."""
    none = [None] * len(dec.tokens)
    return list(zip(dec.tokens, dec.finished, dec.stats or none, dec.sampler_logp or none))


def _token_stats(step_logits, tokens: torch.Tensor):
    """(logprob of sampled token, entropy, self-certainty) arrays [B, T] from the raw per-step logits
    that generate returns, one step at a time so no [B, T, V] tensor is built."""
    steps = [step_token_stats(logits, tokens[:, t]) for t, logits in enumerate(step_logits)]
    return [torch.stack(col, dim=1).cpu().numpy() for col in zip(*steps)]
