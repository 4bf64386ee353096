"""Cluster vote for open-ended answers (OP-TTRAV): k-means on embeddings, the largest cluster wins.

K in [k_min, k_max] is chosen by silhouette (euclidean on unit vectors, ties -> smaller K). Clusters are
numbered in first-seen order, so a tie for largest goes to the cluster of the earliest response (as in
majority_class). Empty responses are left out of the clustering: 0 reward, -1 in the banded variant.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .base import Group, RewardContext, RewardOutput, register_reward
from .embedder import DEFAULT_MODEL, get_embedder
from .embedding import MODEL_HELP, cos_to_unit, normalise, similarity_diagnostics, valid_mask

N_INIT = 10  # k-means restarts; fixed so a seed fully determines the clustering
SAME = 0.99  # all pairwise cosines at or above this -> one cluster (near-identical responses)
VARIANTS = ("simple", "continuous", "kde", "banded")


def first_seen_labels(labels) -> np.ndarray:
    order = {}
    return np.array([order.setdefault(int(x), len(order)) for x in labels])


def select_clusters(E: np.ndarray, k_min: int = 2, k_max: int = 4, seed: int = 0) -> tuple[np.ndarray, int, float]:
    """-> (labels in first-seen order, k, silhouette); k = 1 with silhouette 0 when no split applies."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(E)
    one = (np.zeros(n, dtype=int), 1, 0.0)
    if n < 3 or (E @ E.T).min() >= SAME:
        return one
    distinct = len(np.unique(np.round(E, 5), axis=0))
    best = one
    for k in range(max(2, k_min), min(k_max, n - 1, distinct) + 1):
        labels = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit_predict(E)
        if len(set(labels)) < 2:
            continue
        s = float(silhouette_score(E, labels, metric="euclidean"))
        if best[1] == 1 or s > best[2]:
            best = (first_seen_labels(labels), k, s)
    return best


def largest(labels: np.ndarray) -> int:
    return int(np.argmax(np.bincount(labels)))  # argmax takes the lowest (first-seen) id on ties


def variant_rewards(E: np.ndarray, labels: np.ndarray, variant: str, tau: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """-> (rewards, anchor); anchor = normalised centroid of the largest cluster."""
    top = labels == largest(labels)
    anchor = normalise(E[top].mean(0))
    u = cos_to_unit(E, anchor)
    if variant == "simple":
        r = top.astype(float)
    elif variant == "continuous":
        r = u
    elif variant == "kde":
        if tau <= 0:
            raise ValueError(f"cluster_vote tau must be > 0, got {tau}")
        kern = np.exp((E @ anchor - 1.0) / tau)
        r = kern / kern.max()
    elif variant == "banded":
        r = np.where(top, 0.5 + 0.5 * u, -1.0 + 0.5 * u)
    else:
        raise ValueError(f"cluster_vote variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return r, anchor


def novelty_bonus(anchor: np.ndarray, buffer) -> float:
    """1 - max cosine of the anchor to the recent anchors; 0 while the buffer is empty."""
    return 0.0 if not buffer else float(1.0 - max(float(anchor @ b) for b in buffer))


@dataclass(frozen=True)
class ClusterParams:
    model: str = field(default=DEFAULT_MODEL, metadata={"help": MODEL_HELP + " (OP-TTRAV)"})
    variant: str = field(
        default="simple",
        metadata={
            "help": "simple: 1 in the largest cluster else 0; continuous: (cos+1)/2 to its anchor; "
            "kde: exp((cos-1)/tau) scaled to max 1; banded: 0.5+0.5u in it, -1+0.5u outside, empty -1 (OP-TTRAV)",
            "choices": VARIANTS,
        },
    )
    k_min: int = field(default=2, metadata={"help": "smallest K tried by k-means (OP-TTRAV: 2)"})
    k_max: int = field(default=4, metadata={"help": "largest K tried, capped at n-1 and distinct embeddings (OP-TTRAV: 4)"})
    tau: float = field(default=0.2, metadata={"help": "kernel width of the kde variant (OP-TTRAV: 0.2)"})
    novelty: float = field(
        default=0.0,
        metadata={"help": "bonus w * (1 - max cos of the anchor to recent anchors) for the largest cluster (OP-TTRAV)"},
    )
    novelty_buffer: int = field(default=32, metadata={"help": "how many recent anchors the novelty bonus compares with"})


@register_reward(
    "cluster_vote",
    help="OP-TTRAV: k-means on response embeddings (K by silhouette); responses in the largest cluster win.",
    params=ClusterParams,
)
def cluster_vote(group: Group, params: ClusterParams, ctx: RewardContext) -> RewardOutput:
    if params.variant not in VARIANTS:
        raise ValueError(f"cluster_vote variant must be one of {', '.join(VARIANTS)}, got {params.variant!r}")
    E = get_embedder(ctx.state, params.model).encode(list(group.responses))
    valid = valid_mask(group.responses)
    seed = int(ctx.rng.integers(2**31 - 1))  # drawn every call: same run seed, same clusterings
    r = np.full(len(group), -1.0 if params.variant == "banded" else 0.0)
    diags = {"k": 0.0, "silhouette": 0.0, "largest_cluster_share": 0.0}
    if valid.any():
        labels, k, sil = select_clusters(E[valid], params.k_min, params.k_max, seed)
        rv, anchor = variant_rewards(E[valid], labels, params.variant, params.tau)
        top = labels == largest(labels)
        buf = ctx.state.setdefault("cluster_vote", {}).setdefault("anchors", deque(maxlen=max(1, params.novelty_buffer)))
        rv = rv + params.novelty * novelty_bonus(anchor, buf) * top
        buf.append(anchor)
        r[valid] = rv
        diags = {"k": float(k), "silhouette": sil, "largest_cluster_share": float(top.sum()) / len(group)}
    return RewardOutput(r.tolist(), {**diags, **similarity_diagnostics(E, group.responses)})
