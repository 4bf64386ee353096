"""LoRA on a backend's model (peft): attaching the adapter, sampling from merged copies, adapter dropout."""
from __future__ import annotations

import contextlib

import torch


def attach_lora(model, cfg, exclude: str | None, seed: int):
    """`model` wrapped by peft with the configured adapter; its random init (lora_A) comes from `seed` inside a
    forked generator, so the same seed trains the same run in any process and the caller's RNG is untouched."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [
        t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, exclude_modules=exclude, task_type="CAUSAL_LM")
    device = next(model.parameters()).device
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return get_peft_model(model, lora)


@contextlib.contextmanager
def adapter_dropout(model):
    """The adapter's dropout modules in training mode for one pass (the model itself stays in eval mode)."""
    drops = [d for name, d in model.named_modules() if ".lora_dropout." in name
             and isinstance(d, torch.nn.Dropout) and d.p > 0]
    for d in drops:
        d.train()
    try:
        yield
    finally:
        for d in drops:
            d.eval()


@contextlib.contextmanager
@torch.no_grad()
def sampling_weights(model, merge: bool, cast: torch.dtype | None):
    """Sample from transient copies of the linear weights: LoRA merged in (unmerged LoRA doubles the
    per-token cost) and pre-cast to the autocast dtype (autocast would otherwise re-cast every weight at
    every decoded token). Each copy holds exactly the values autocast computes with, and goes in as a new
    Parameter object that is swapped back afterwards, so base weights are never modified (peft's
    merge/unmerge round trip drifts in the last bits, which would make resumed runs differ from unbroken
    ones) and tied weights (embeddings / lm_head) stay untouched for the modules that share them."""
    from peft.tuners.lora import LoraLayer

    swapped = []
    # linear layers inside a LoRA layer (its base layer, A and B) are handled by that layer
    inside = {id(sub) for m in model.modules() if isinstance(m, LoraLayer) for sub in m.modules() if sub is not m}
    for m in model.modules():
        names = []
        if isinstance(m, LoraLayer):
            if not merge or m.merged or getattr(m, "lora_variant", None):
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
