"""The trainer for text-to-image policies (unified models, backends/unified.py): the same step as trainer.py
(groups, reward, advantages, the GRPO loss, KL and logging), with image tokens as the completions.

A rollout is G images per prompt drawn through `generate_images`; each is decoded and saved as a PNG, whose path
is the completion's `text` (what the reward reads: Meta-TTRL asks yes/no questions about the file), and whose
image tokens are its `ids` (what the update scores with `image_token_logprobs`, the guided distribution the tokens
were drawn from). Like the text trainer, it sees `Query` only: a scene's spec never reaches it.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .backends.unified import ImageSample
from .data import Query
from .seeds import derive
from .trainer import Trainer, View


@dataclass(frozen=True)
class ImageCompletion:
    """One sampled image as a completion: the fields trainer.py reads of a text `Completion`."""

    sample: ImageSample
    text: str  # the saved PNG's path: the group's response, read by the reward

    @property
    def ids(self) -> tuple[int, ...]:  # the image tokens the update scores
        return self.sample.tokens

    finished = True  # an image always has its full token grid
    stats = None  # per-token statistics are not recorded for images (no certainty reward reads them)
    sampler_logprobs = None  # the policy itself samples (no separate rollout engine)


class ImageTrainer(Trainer):
    """`Trainer` over image tokens. `image_dir` keeps each step's rollout images (a temporary folder when None)."""

    def __init__(self, *args, image_dir: str | Path | None = None, **kw):
        super().__init__(*args, **kw)
        # the gate reads the vote over extracted answers, which image paths do not have: rewards alone decide
        self.gate = None
        self.want_token_stats = False
        self._tmp = None if image_dir else tempfile.TemporaryDirectory(prefix="ttrl-images-")
        self.image_dir = Path(image_dir or self._tmp.name)

    def _rollout(self, queries: Sequence[Query]) -> tuple[list[list[ImageCompletion]], list[list[View]]]:
        groups = self.policy.generate_images([q.prompt for q in queries], self.sampling.n_votes,
                                             seed=derive(self.seed, "rollout", self.steps))
        folder = self.image_dir / f"step{self.steps + 1:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for q, samples in zip(queries, groups):
            comps = []
            for i, (s, im) in enumerate(zip(samples, self.policy.decode(samples))):
                path = folder / f"{safe_name(q.id)}_{i}.png"
                im.save(path)
                comps.append(ImageCompletion(s, str(path)))
            out.append(comps)
        return out, [[(q, None)] * len(comps) for q, comps in zip(queries, out)]

    def _logprobs(self, comps, reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy.image_token_logprobs([c.sample for c in comps], reference=reference)


def safe_name(name: str) -> str:
    """A file-name-safe form of an item id."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)

