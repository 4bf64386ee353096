"""LoRA factors that ship with a bundled model and merge into its language model at assembly.

The zoo's small models (tiny-janus, tiny-vlm) train a LoRA on SmolLM2 while they are built, and ship only its
factors: `lora.<module>.A` and `lora.<module>.B` (the scale folded into B), so that `merge_lora` adds B @ A to
the module's weight and the assembled folder is a plain transformers checkpoint. Training uses peft.
"""
from __future__ import annotations

import torch

LORA_PREFIX = "lora."  # lora.<LM module>.A / .B
LORA_TARGETS = r".*language_model.*\.(q|k|v|o|gate|up|down)_proj"  # every projection of the LM's layers


def with_lora(model, r: int, seed: int, targets: str = LORA_TARGETS):
    """`model` with a fresh LoRA (rank r, alpha 2r) on every LM projection, seeded; only the LoRA trains.
    The LoRA layers are injected in place, so `model` itself runs with them."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets))


def lora_factors(peft_model) -> dict[str, torch.Tensor]:
    """{lora.<module>.A, lora.<module>.B * scaling} of every LoRA layer, named as in the plain model."""
    out = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            key = name.removeprefix("base_model.model.")
            out[f"{LORA_PREFIX}{key}.A"] = module.lora_A["default"].weight.detach().clone()
            out[f"{LORA_PREFIX}{key}.B"] = module.scaling["default"] * module.lora_B["default"].weight.detach().clone()
    return out


def merged(peft_model) -> dict[str, torch.Tensor]:
    """The LoRA's factors, then the LoRA merged into the wrapped model's weights and removed, so the next stage
    trains on top of it."""
    lora = lora_factors(peft_model)
    peft_model.merge_and_unload()
    return lora


def stack_lora(*factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One set of factors whose B @ A is the sum of the given sets' (A stacked by rows, B by columns), so the
    shipped file keeps one LoRA pair per module whatever the number of stages that trained one."""
    out = {}
    for key in sorted({k[:-2] for f in factors for k in f}):
        pairs = [(f[key + ".A"], f[key + ".B"]) for f in factors if key + ".A" in f]
        out[key + ".A"] = torch.cat([a for a, _ in pairs], 0)
        out[key + ".B"] = torch.cat([b for _, b in pairs], 1)
    return out


def first_rank(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """`tensors` with every LoRA pair cut to its first `rank` components (A's rows, B's columns): undoes stack_lora
    for the set stacked first; other tensors unchanged."""
    return {k: (v[:rank] if k.endswith(".A") else v[:, :rank]) if k.startswith(LORA_PREFIX) else v
            for k, v in tensors.items()}


@torch.no_grad()
def merge_lora(model, trained: dict[str, torch.Tensor]) -> None:
    """W += B @ A for every LoRA pair in `trained` (other keys are ignored)."""
    params = dict(model.named_parameters())
    names = {k[len(LORA_PREFIX):-2] for k in trained if k.startswith(LORA_PREFIX)}
    for name in sorted(names):
        w = params[name + ".weight"]
        w += (trained[f"{LORA_PREFIX}{name}.B"].float() @ trained[f"{LORA_PREFIX}{name}.A"].float()).to(w.dtype)
