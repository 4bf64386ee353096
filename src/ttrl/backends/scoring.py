"""Scoring completions: per-token logits of each completion under a model, with the prompt run once per group
(its KV cache, with gradients, gathered for the completions that share it) or once per sequence, and gradient
checkpointing that keeps the shared prompt pass."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from ..config import ConfigError
from ..engines.base import positions
from ..rollout import Completion


def enable_checkpointing(base) -> None:
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
def checkpointed(model, enabled: bool):
    """Gradient checkpointing for one grad-enabled pass. transformers checkpoints a layer only in training mode,
    so the decoder layers alone are flipped (their dropout and attention submodules stay in eval mode, keeping
    the scored distribution the sampled one). A layer may keep a cache here: the completion pass only reads its
    prompt's (_PrefixCache), so a replayed layer sees the same keys."""
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True
              and hasattr(m, "_can_checkpoint_with_cache")] \
        if enabled and torch.is_grad_enabled() else []
    for m in layers:
        m.training, m._can_checkpoint_with_cache = True, True
    try:
        yield
    finally:
        for m in layers:
            m.training = False
            del m._can_checkpoint_with_cache  # back to the class default


class Scorer:
    """Builds the batches and runs the passes for one backend (its pad id, device and image inputs)."""

    def __init__(self, backend):
        self.b = backend

    def _completion_batch(self, completions: Sequence[Completion]):
        """Completion tokens right-padded [B, Lc] and their mask."""
        lc = max(max(len(c.ids) for c in completions), 1)
        ids = torch.full((len(completions), lc), self.b.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, c in enumerate(completions):
            ids[b, :len(c.ids)] = torch.tensor(c.ids, dtype=torch.long)
            mask[b, :len(c.ids)] = 1
        return ids.to(self.b.device), mask.to(self.b.device)

    def _prompt_batch(self, completions: Sequence[Completion]):
        """The completions' prompt tokens left-padded [B, Lp] and their mask."""
        lp = max(len(c.prompt_ids) for c in completions)
        ids = torch.full((len(completions), lp), self.b.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, c in enumerate(completions):
            ids[b, lp - len(c.prompt_ids):] = torch.tensor(c.prompt_ids)
            mask[b, lp - len(c.prompt_ids):] = 1
        return ids.to(self.b.device), mask.to(self.b.device)

    def full(self, model, completions):
        """Logits for each completion token from one pass over prompt + completion per sequence."""
        pids, pmask = self._prompt_batch(completions)
        cids, cmask = self._completion_batch(completions)
        lc = cids.shape[1]
        ids = torch.cat([pids, cids], dim=1)
        attn = torch.cat([pmask, cmask], dim=1)
        with checkpointed(model, self.b.cfg.gradient_checkpointing):
            logits = model(input_ids=ids, attention_mask=attn, position_ids=positions(attn), logits_to_keep=lc + 1,
                           use_cache=False, **self.b.model_inputs(completions)).logits
        return logits[:, :-1], cids, cmask.float()

    def shared(self, model, completions):
        """The same logits, with each distinct prompt run once: its KV cache (carrying gradients) is
        gathered for the completions that share it. The N samples of a group share their prompt, so the
        prompt costs one pass instead of N; mathematically identical to full()."""
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
                    **self.b.model_inputs(firsts))
        rows = torch.tensor(owner, device=self.b.device)
        cache = out.past_key_values
        cache.batch_select_indices(rows)  # differentiable gather: gradients reach the prompt pass
        if self.b.cfg.gradient_checkpointing:
            _PrefixCache.adopt(cache)
        cids, cmask = self._completion_batch(completions)
        lc = cids.shape[1]
        cpos = ppos[rows, -1:] + 1 + torch.arange(lc, device=self.b.device)
        attn = torch.cat([pmask[rows], cmask], dim=1)
        with checkpointed(model, self.b.cfg.gradient_checkpointing):  # the prompt pass above writes its cache, so it is never replayed
            rest = model(input_ids=cids, attention_mask=attn, position_ids=cpos, past_key_values=cache,
                         use_cache=True).logits
        logits = torch.cat([out.logits[rows, -1:], rest[:, :-1]], dim=1)  # the prompt's last logit predicts token 0
        return logits, cids, cmask.float()


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
