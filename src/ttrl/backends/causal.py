"""The causal backend: Hugging Face causal language models (text only), LoRA via peft.

Loading, the adapter and the reference policy, prompts, sampling through the configured rollout engine, and
per-token log-probs for the update. The vision backend (vision.py) subclasses it and overrides only loading,
prompt content and model inputs.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence

import torch

from ..config import ConfigError, ModelConfig
from ..data import Query
from ..engines.base import SampleOptions, all_engines
from ..prompting import user_message
from ..rollout import Completion, Prompt
from ..seeds import derive
from ..zoo import resolve_model
from .base import autocast_ctx, pick_device, register_backend, resolve_dtypes
from .lora import adapter_dropout, attach_lora, sampling_weights
from .scoring import Scorer, enable_checkpointing

log = logging.getLogger(__name__)


@register_backend("causal", help="text-only causal language models (AutoModelForCausalLM)", priority=-100,
                  detect=lambda config: True)
class CausalBackend:
    modalities: frozenset[str] = frozenset()
    plain_positions = True  # 1-D positions after the prefill: the lean engine and shared-prompt scoring fit

    def __init__(self, cfg: ModelConfig, need_reference: bool = True, seed: int = 0):
        """`seed` (the run seed) fixes the adapter's random init, so the same seed trains the same run anywhere."""
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.dtype, self.autocast = resolve_dtypes(self.device, cfg.dtype, cfg.autocast)
        path = resolve_model(cfg.model)
        self.tokenizer = self._load_tokenizer(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        model = self._load_model(path).to(self.device)
        self.model_type = getattr(model.config, "model_type", None)
        self.eos_ids = self._eos_ids(model)
        self._ref_model = None
        if cfg.finetune == "lora":
            model = attach_lora(model, cfg, self._lora_exclude(), derive(seed, "lora_init"))
            self._freeze(model)
        elif cfg.finetune == "full":
            if need_reference:  # full fine-tuning has no adapter to switch off: keep a frozen copy
                self._ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        else:
            raise ValueError(f"finetune must be lora or full, got {cfg.finetune!r}")
        self.model = model
        self.model.eval()  # no dropout in rollouts; LoRA dropout acts only in the update's gradient pass
        if cfg.gradient_checkpointing:
            enable_checkpointing(model.get_base_model() if hasattr(model, "get_base_model") else model)
        self.scorer = Scorer(self)
        self._engines = {}  # rollout engines by name, each built on first use (cfg.decoder may change)
        _ = self.engine  # the configured one now: an unsupported model or a missing build fails before any work

    # -- what a subclass overrides (vision.py) ---------------------------------------------------
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

    def encode(self, prompts: Sequence[Prompt]):
        """Left-padded model inputs for rendered prompts (token ids, mask, and any image tensors)."""
        return self.tokenizer([p.text for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)

    def model_inputs(self, completions: Sequence[Completion]) -> dict:
        """Extra forward inputs (pixel values) for scoring completions; none for text models."""
        return {}

    def check(self, query: Query) -> None:
        """Raise DataError (naming the file) when an input of the item cannot be read; text needs no check."""

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
        return int(self.encode([self.render(query, instruction)])["input_ids"].shape[1])

    # -- sampling --------------------------------------------------------------------------
    @property
    def engine(self):
        """The rollout engine cfg.decoder names (auto: lean where it fits, else hf)."""
        engines = all_engines()
        name = self.cfg.decoder
        if name == "auto":
            name = "lean" if engines["lean"].supports(self) is None else "hf"
        if name not in self._engines:
            if name not in engines:
                raise ConfigError(f"decoder {name!r} is not one of auto, {', '.join(sorted(engines))}")
            why = engines[name].supports(self)
            if why:
                raise ConfigError(f"decoder {name!r}: {why}")
            self._engines[name] = engines[name].cls(self)
        return self._engines[name]

    def sampling_weights(self):
        """Transient merged / pre-cast copies of the linear weights for torch-based engines (lora.py)."""
        return sampling_weights(self.model, self.cfg.merge_for_sampling,
                                self.autocast if self.cfg.cast_for_sampling else None)

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt | str], n: int, *, temperature: float | None, top_p: float = 1.0,
                 max_new_tokens: int, batch_size: int, seed: int, token_stats: bool = False) -> list[list[Completion]]:
        prompts = [p if isinstance(p, Prompt) else Prompt(p) for p in prompts]
        per_chunk = max(1, batch_size // n)
        out: list[list[Completion]] = []
        with self.engine.session(), autocast_ctx(self.device, self.autocast):
            for k, start in enumerate(range(0, len(prompts), per_chunk)):
                chunk = prompts[start:start + per_chunk]
                opts = SampleOptions(temperature, top_p, max_new_tokens, frozenset(self.eos_ids),
                                     derive(seed, "chunk", k), token_stats)
                for prompt, rows in zip(chunk, self.engine.sample(chunk, n, opts)):
                    out.append([Completion(r.prompt_ids, r.ids, self.tokenizer.decode(r.ids, skip_special_tokens=True),
                                           r.finished, r.stats, prompt.images, r.sampler_logprobs, prompt.audio)
                                for r in rows])
        return out

    def close(self) -> None:
        """Free the engines' resources (llama.cpp contexts and exported weights) now rather than at exit."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

    # -- scoring ---------------------------------------------------------------------------
    def token_logprobs(self, completions: Sequence[Completion], *, temperature: float,
                       reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        model, ctx = self.model, torch.enable_grad()
        if reference:
            ctx = torch.no_grad()
            if self._ref_model is not None:
                model = self._ref_model
        lora_ref = reference and self._ref_model is None and hasattr(self.model, "disable_adapter")
        # LoRA dropout acts in the update's gradient pass only: sampling, reference and no-grad scoring stay exact
        dropout = adapter_dropout(self.model) if not reference and torch.is_grad_enabled() else contextlib.nullcontext()
        shared = self.cfg.share_prompt and self.plain_positions
        with ctx, autocast_ctx(self.device, self.autocast), dropout, \
                self.model.disable_adapter() if lora_ref else contextlib.nullcontext():
            score = self.scorer.shared if shared else self.scorer.full
            logits, target, cmask = score(model, completions)
        logits = logits.float() / temperature  # the sampling distribution is softmax(z / T)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return logp * cmask, cmask

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, path) -> None:
        self.model.save_pretrained(path)
