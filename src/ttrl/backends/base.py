"""What a model backend provides, and the registry that picks one per model.

A backend owns one modality's model: loading it (with LoRA and the reference policy), rendering an item into
model inputs, sampling through a rollout engine (ttrl/engines), per-token log-probs of completions (policy with
gradients, reference without), the trainable parameters, and the checks of an item's inputs (images that open,
audio that decodes). The trainer and the protocols see only this interface, so a new modality is one new file
that registers itself here (`register_backend`) and in `backends/__init__.py`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..data import Query
from ..rollout import Completion, Prompt


class Backend(Protocol):
    model: torch.nn.Module
    modalities: frozenset[str]  # what an item may carry besides text: "image", "audio", ...

    def render(self, query: Query, instruction: str) -> Prompt: ...

    def check(self, query: Query) -> None:
        """Raise DataError (naming the file) when the item's inputs cannot be read by this model."""
        ...

    def prompt_length(self, query: Query, instruction: str) -> int:
        """Tokens of the rendered prompt, checked against the model's context before anything runs."""
        ...

    def generate(
        self, prompts: Sequence[Prompt], n: int, *, temperature: float | None, top_p: float,
        max_new_tokens: int, batch_size: int, seed: int, token_stats: bool = False,
    ) -> list[list[Completion]]:
        """n completions per prompt; temperature None = greedy; token_stats fills Completion.stats."""
        ...

    def token_logprobs(
        self, completions: Sequence[Completion], *, temperature: float, reference: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logp [B, T], mask [B, T]) of each completion's tokens under the policy (with grad) or
        under the reference policy (no grad)."""
        ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...


@dataclass(frozen=True)
class BackendSpec:
    name: str
    cls: Callable[..., Any]
    detect: Callable[[Any], bool]  # a transformers config -> whether this backend is the model's own
    priority: int  # higher is tried first by `auto`
    help: str


BACKENDS: dict[str, BackendSpec] = {}


def register_backend(name: str, help: str, detect: Callable[[Any], bool] = lambda c: False, priority: int = 0):
    def deco(cls):
        BACKENDS[name] = BackendSpec(name, cls, detect, priority, help)
        cls.backend_name = name
        return cls

    return deco


def all_backends() -> dict[str, BackendSpec]:
    from . import _load_all  # noqa: F401  (registers the built-in backends)

    return BACKENDS


def backend_name(choice: str, model_path: str) -> str:
    """`choice` itself, or for auto the highest-priority backend whose detect() accepts the model's config."""
    backends = all_backends()
    if choice != "auto":
        return choice
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    for spec in sorted(backends.values(), key=lambda s: -s.priority):
        if spec.detect(config):
            return spec.name
    return "causal"


def pick_device(device: str) -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls are fast here (measured on AMX CPUs: 2.2x forward+backward)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        return bool(cpu and (cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported()))
    return False


def resolve_dtypes(device: torch.device, dtype: str, autocast: str) -> tuple[torch.dtype, torch.dtype | None]:
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        # GPUs hold bf16 weights; on CPU float32 master weights keep small LoRA updates exact.
        w = torch.bfloat16 if device.type == "cuda" and fast_bf16(device) else torch.float32
    elif dtype in names:
        w = names[dtype]
    else:
        raise ValueError(f"dtype must be auto, {', '.join(names)}; got {dtype!r}")
    if autocast == "auto":
        # Not on CPU: oneDNN's bf16 kernels round differently depending on buffer addresses, so the same
        # seed gave different samples in different processes (and fp32 trains faster here anyway).
        a = torch.bfloat16 if (w == torch.float32 and device.type != "cpu" and fast_bf16(device)) else None
    elif autocast == "none":
        a = None
    elif autocast in names:
        a = names[autocast]
    else:
        raise ValueError(f"autocast must be auto, none, {', '.join(names)}; got {autocast!r}")
    return w, a


def autocast_ctx(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
