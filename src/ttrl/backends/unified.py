"""What a unified text-to-image model offers test-time RL: it draws images as sequences of discrete image tokens
(so GRPO scores image-token log-probs) and answers yes/no questions about images (so it can judge its own
drawings, Meta-TTRL). A protocol or reward sees only this interface; Janus (backends/t2i.py) is one
implementation, and another unified model (BAGEL, Qwen-Image, through their own libraries) is one more file.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class ImageSample:
    """One sampled image as the model produced it."""

    prompt: str  # the text prompt
    prompt_ids: tuple[int, ...]  # the rendered generation prompt, ending where the image tokens begin
    tokens: tuple[int, ...]  # image tokens, row-major over the tokenizer's grid
    # log-prob of each token under the distribution it was drawn from (for Janus: the guided one, see t2i.py);
    # image_token_logprobs of the same tokens returns these values (same distribution, same weights)
    logprobs: np.ndarray


@dataclass(frozen=True)
class ImageGenOptions:
    """How images are sampled and scored; one set for both, so the update scores the sampled distribution."""

    guidance: float = field(default=5.0, metadata={
        "help": "classifier-free guidance scale w: logits u + w (c - u) (Janus-Pro's generation_config and "
                "transformers' Janus generate default 5); 1 = no guidance (conditional logits only)"})
    temperature: float = field(default=1.0, metadata={
        "help": "image tokens are drawn from softmax(guided logits / T) (Janus-Pro samples at T = 1)"})
    batch_size: int = field(default=8, metadata={"help": "images sampled per forward batch (each row runs twice "
                                                         "with guidance: conditional and unconditional)"})
    yes_no_instruction: str = field(default="Answer with Yes or No.", metadata={
        "help": "appended to each verification question, so the next token is the answer (Meta-TTRL reads "
                "P(Yes) and P(No) there)"})


class UnifiedImageModel(Protocol):
    image_size: int  # side of a decoded image in pixels
    num_image_tokens: int  # tokens per image

    def generate_images(self, prompts: Sequence[str], n: int, *, seed: int,
                        greedy: bool = False) -> list[list[ImageSample]]:
        """n images per prompt, sampled from the model's (guided) image-token distribution."""
        ...

    def image_token_logprobs(self, samples: Sequence[ImageSample], *,
                             reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logp [B, T], mask [B, T]) of each sample's image tokens given its prompt, under the policy (with
        gradients) or the reference policy (no gradients), from the distribution generate_images samples."""
        ...

    def decode(self, samples: Sequence[ImageSample]) -> list:
        """PIL images of the samples' tokens."""
        ...

    def yes_probability(self, images: Sequence, questions: Sequence[str], *, reference: bool = False) -> list[float]:
        """For each (image, question) pair, P(Yes) / (P(Yes) + P(No)) of the model's next token."""
        ...
