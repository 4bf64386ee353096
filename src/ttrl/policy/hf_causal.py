"""Policy backend for Hugging Face causal language models (text only), with LoRA via peft."""
from __future__ import annotations

import contextlib
import copy
import logging
import math
from typing import Sequence

import torch

from ..config import ModelConfig
from ..data import Query
from ..prompting import user_message
from ..rollout import Completion, Prompt, TokenStats
from .base import autocast_ctx, pick_device, resolve_dtypes
from .zoo import resolve_model

log = logging.getLogger(__name__)


class HFCausalPolicy:
    def __init__(self, cfg: ModelConfig, need_reference: bool = True):
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
        if cfg.finetune == "lora":
            from peft import LoraConfig, get_peft_model

            targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [
                t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=targets, exclude_modules=self._lora_exclude(), task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
            self._freeze(model)
        elif cfg.finetune == "full":
            if need_reference:  # full fine-tuning has no adapter to switch off: keep a frozen copy
                self._ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        else:
            raise ValueError(f"finetune must be lora or full, got {cfg.finetune!r}")
        self.model = model
        self.model.eval()  # no dropout in rollouts; LoRA dropout defaults to 0 for the same reason

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

    # -- sampling --------------------------------------------------------------------------
    @contextlib.contextmanager
    @torch.no_grad()
    def _merged(self):
        """Sample from merged weights: unmerged LoRA doubles the per-token cost of HF generate here.
        Each adapted layer gets a merged copy W + BA for the duration and its original tensor back
        afterwards, so the base weights are never modified (peft's merge/unmerge round trip drifts
        in the last bits, which would make resumed runs differ from unbroken ones)."""
        swapped = []
        if self.cfg.merge_for_sampling:
            from peft.tuners.lora import LoraLayer

            for m in self.model.modules():
                if not isinstance(m, LoraLayer) or m.merged or getattr(m, "lora_variant", None):
                    continue  # DoRA and other variants keep their unmerged forward
                names = [a for a in m.active_adapters if a in m.lora_A]
                if not names:
                    continue
                base = m.get_base_layer()
                orig = base.weight.data
                merged = orig.clone()
                for a in names:
                    merged += m.get_delta_weight(a).to(orig.dtype)
                base.weight.data = merged
                m.merged_adapters.extend(names)
                swapped.append((m, base, orig, names))
        try:
            yield
        finally:
            for m, base, orig, names in swapped:
                base.weight.data = orig
                for a in names:
                    m.merged_adapters.remove(a)

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt | str], n: int, *, temperature: float | None, top_p: float = 1.0,
                 max_new_tokens: int, batch_size: int, seed: int, token_stats: bool = False) -> list[list[Completion]]:
        with self._merged():
            return self._generate(prompts, n, temperature, top_p, max_new_tokens, batch_size, seed, token_stats)

    def _generate(self, prompts, n, temperature, top_p, max_new_tokens, batch_size, seed,
                  token_stats) -> list[list[Completion]]:
        greedy = temperature is None
        prompts = [p if isinstance(p, Prompt) else Prompt(p) for p in prompts]
        per_chunk = max(1, batch_size // n)
        out: list[list[Completion]] = []
        torch.manual_seed(seed)  # one seed per call: the same call gives the same samples
        for start in range(0, len(prompts), per_chunk):
            chunk = prompts[start:start + per_chunk]
            # each prompt repeated n times (rather than num_return_sequences) keeps images aligned
            enc = self._encode([p for p in chunk for _ in range(n)]).to(self.device)
            kwargs = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
            with autocast_ctx(self.device, self.autocast):
                gen = self.model.generate(**enc, **kwargs, max_new_tokens=max_new_tokens,
                                          pad_token_id=self.tokenizer.pad_token_id, output_logits=token_stats,
                                          return_dict_in_generate=True)
            seqs = gen.sequences
            width = enc["input_ids"].shape[1]
            stats = _token_stats(gen.logits, seqs[:, width:]) if token_stats else None
            for i, prompt in enumerate(chunk):
                mask = enc["attention_mask"][i * n].bool()
                prompt_ids = tuple(enc["input_ids"][i * n][mask].tolist())
                group = []
                for r in range(i * n, (i + 1) * n):
                    ids, finished = self._cut(seqs[r, width:].tolist())
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                    st = None if stats is None else TokenStats(*(a[r, :len(ids)] for a in stats))
                    group.append(Completion(prompt_ids, tuple(ids), text, finished, st, prompt.images))
                out.append(group)
        return out

    def _cut(self, row: list[int]) -> tuple[list[int], bool]:
        for j, t in enumerate(row):
            if t in self.eos_ids:
                return row[:j + 1], True  # keep EOS: the policy learns when to stop
        return row, False

    # -- scoring ---------------------------------------------------------------------------
    def token_logprobs(self, completions: Sequence[Completion], *, temperature: float,
                       reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        lp = max(len(c.prompt_ids) for c in completions)
        lc = max(max(len(c.ids) for c in completions), 1)
        ids = torch.full((len(completions), lp + lc), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for b, c in enumerate(completions):
            p = len(c.prompt_ids)
            ids[b, lp - p:lp] = torch.tensor(c.prompt_ids)
            ids[b, lp:lp + len(c.ids)] = torch.tensor(c.ids, dtype=torch.long)
            attn[b, lp - p:lp + len(c.ids)] = 1
        ids, attn = ids.to(self.device), attn.to(self.device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions (as in generate)
        target = ids[:, lp:]
        cmask = attn[:, lp:].float()
        model, ctx = self.model, torch.enable_grad()
        if reference:
            ctx = torch.no_grad()
            if self._ref_model is not None:
                model = self._ref_model
        extra = self._image_inputs(completions)
        with ctx, autocast_ctx(self.device, self.autocast):
            lora_ref = reference and self._ref_model is None and hasattr(self.model, "disable_adapter")
            with self.model.disable_adapter() if lora_ref else contextlib.nullcontext():
                logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=lc + 1,
                               **extra).logits
        logits = logits[:, :-1].float() / temperature  # the sampling distribution is softmax(z / T)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return logp * cmask, cmask

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, path) -> None:
        self.model.save_pretrained(path)


def _token_stats(step_logits, tokens: torch.Tensor):
    """(logprob of sampled token, entropy, self-certainty) arrays [B, T] from the raw per-step logits
    that generate returns, one step at a time so no [B, T, V] tensor is built."""
    cols = [[], [], []]
    for t, logits in enumerate(step_logits):
        logp = torch.log_softmax(logits.float(), dim=-1)
        cols[0].append(logp.gather(-1, tokens[:, t:t + 1]).squeeze(-1))
        cols[1].append(-(logp.exp() * logp).sum(-1))
        cols[2].append(-logp.mean(-1) - math.log(logp.shape[-1]))
    return [torch.stack(c, dim=1).cpu().numpy() for c in cols]
