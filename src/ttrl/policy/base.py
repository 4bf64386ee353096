"""What a policy backend provides to the trainer and the protocols.

A backend turns queries into prompts, samples completions, and scores completions with
per-token log-probs (with gradients for the policy, without for the reference). The trainer
and protocols only use this interface, so other backends (vision-language, vLLM, a faster
decode loop) are one new file each.
"""
from __future__ import annotations

import contextlib
from typing import Protocol, Sequence

import torch

from ..data import Query
from ..rollout import Completion, Prompt


class Policy(Protocol):
    model: torch.nn.Module

    def render(self, query: Query, instruction: str) -> Prompt: ...

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
