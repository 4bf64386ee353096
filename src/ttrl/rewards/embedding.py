"""Embedding-agreement rewards for open-ended answers (OP-TTRAV): medoid and centroid anchors.

All math works on a matrix E [n, d] of L2-normalised embeddings, so E @ E.T is the cosine matrix.
Empty responses (blank after strip) are left out of the anchor and get reward 0: embedding "" gives
an arbitrary vector that must not win or shape the consensus.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .base import Group, RewardContext, RewardOutput, register_reward
from .embedder import DEFAULT_MODEL, get_embedder

MODEL_HELP = "sentence embedder: all-minilm-l6-v2 (bundled all-MiniLM-L6-v2) or a local sentence-transformers folder"


def normalise(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def medoid_index(E: np.ndarray) -> int:
    """Row with the highest mean cosine to the other rows; ties go to the lowest index."""
    n = len(E)
    if n == 1:
        return 0
    S = E @ E.T
    return int(np.argmax((S.sum(1) - np.diag(S)) / (n - 1)))


def centroid(E: np.ndarray) -> np.ndarray:
    """Normalised mean vector; when the mean is ~0 (opposite answers cancel) fall back to the medoid."""
    m = E.mean(0)
    return E[medoid_index(E)] if np.linalg.norm(m) < 1e-6 else normalise(m)


def cos_to_unit(E: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """u_i = (cos(e_i, anchor) + 1) / 2 in [0, 1]."""
    return np.clip((E @ anchor + 1.0) / 2.0, 0.0, 1.0)


def word_counts(responses) -> np.ndarray:
    return np.array([len(r.split()) for r in responses], dtype=float)


def length_penalty(lengths: np.ndarray, weight: float) -> np.ndarray:
    """weight * max(0, len_i / median_len - 1): only responses longer than the group's median pay."""
    med = float(np.median(lengths)) if len(lengths) else 0.0
    if weight == 0.0 or med <= 0.0:
        return np.zeros(len(lengths))
    return weight * np.maximum(0.0, lengths / med - 1.0)


def _norm_text(s: str) -> str:
    # same normalisation as the "text" extractor: case, whitespace, trailing punctuation
    return re.sub(r"[\s.,;:!?]+$", "", " ".join(s.split()).lower())


def similarity_diagnostics(E: np.ndarray, responses) -> dict[str, float]:
    """Collapse indicators over all N responses; with fewer than 2 responses both pair stats are 1."""
    n = len(E)
    pairs = (E @ E.T)[np.triu_indices(n, k=1)] if n > 1 else np.ones(1)
    return {
        "mean_pairwise_similarity": float(pairs.mean()),
        "share_pairs_above_0.95": float((pairs > 0.95).mean()),
        "unique_responses": float(len({_norm_text(r) for r in responses})),
    }


def valid_mask(responses) -> np.ndarray:
    return np.array([bool(r.strip()) for r in responses], dtype=bool)


def anchor_rewards(E: np.ndarray, responses, anchor: str, length_weight: float = 0.0) -> np.ndarray:
    """r_i = max(0, (cos(e_i, a) + 1) / 2 - penalty_i), a = medoid or centroid of the non-empty rows."""
    valid = valid_mask(responses)
    r = np.zeros(len(E))
    if not valid.any():
        return r
    Ev = E[valid]
    a = Ev[medoid_index(Ev)] if anchor == "medoid" else centroid(Ev)
    pen = length_penalty(word_counts([x for x, ok in zip(responses, valid) if ok]), length_weight)
    r[valid] = np.maximum(0.0, cos_to_unit(Ev, a) - pen)
    return r


@dataclass(frozen=True)
class EmbeddingParams:
    model: str = field(default=DEFAULT_MODEL, metadata={"help": MODEL_HELP + " (OP-TTRAV)"})
    length_penalty: float = field(
        default=0.0,
        metadata={"help": "subtract w * max(0, words_i / median words - 1), clip at 0 (OP-TTRAV optional penalty)"},
    )


def _embedding_reward(anchor: str):
    def fn(group: Group, params: EmbeddingParams, ctx: RewardContext) -> RewardOutput:
        E = get_embedder(ctx.state, params.model).encode(list(group.responses))
        r = anchor_rewards(E, group.responses, anchor, params.length_penalty)
        return RewardOutput(r.tolist(), similarity_diagnostics(E, group.responses))

    return fn


register_reward(
    "embedding_medoid",
    help="OP-TTRAV: (cos(e_i, medoid) + 1) / 2, medoid = response with the highest mean cosine to the others.",
    params=EmbeddingParams,
)(_embedding_reward("medoid"))
register_reward(
    "embedding_centroid",
    help="OP-TTRAV: (cos(e_i, centroid) + 1) / 2, centroid = normalised mean embedding of the group.",
    params=EmbeddingParams,
)(_embedding_reward("centroid"))
