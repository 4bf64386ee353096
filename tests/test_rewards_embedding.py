"""Embedding and cluster rewards (OP-TTRAV) against hand-computed values on 2-D unit vectors."""
import math

import numpy as np
import pytest

from ttrl.data import Query
from ttrl.rewards import Group, Reward, RewardContext
from ttrl.rewards.cluster import ClusterParams, novelty_bonus, select_clusters, variant_rewards
from ttrl.rewards.embedder import EmbedderError, get_embedder
from ttrl.rewards.embedding import anchor_rewards, centroid, medoid_index, similarity_diagnostics


def U(*deg):
    """Unit vectors at the given angles (degrees): cos between two of them = cos(angle difference)."""
    return np.array([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in deg])


def group(responses):
    return Group(Query("q", "?"), tuple(responses), tuple(responses), tuple(range(len(responses))))


class FakeEmbedder:
    """Maps each response string to a fixed vector, so the registered reward runs on hand-made E."""

    def __init__(self, table):
        self.table = table

    def encode(self, texts):
        return np.array([self.table[t] for t in texts], dtype=np.float32)


# 0, 60, 90 degrees: cos(a,b)=0.5, cos(a,c)=0, cos(b,c)=cos 30=0.866025
ABC = U(0, 60, 90)


def test_medoid_and_rewards():
    # mean cos to the others: a (0.5+0)/2=0.25, b (0.5+0.866)/2=0.683, c (0+0.866)/2=0.433 -> b
    assert medoid_index(ABC) == 1
    # (cos + 1)/2 to b: a 0.75, b 1, c (0.866025+1)/2 = 0.933013
    assert anchor_rewards(ABC, ["a", "b", "c"], "medoid") == pytest.approx([0.75, 1.0, 0.933013], abs=1e-6)


def test_centroid_and_rewards():
    # mean = (0.5, 0.622008), |mean| = 0.798057 -> anchor (0.626522, 0.779404)
    assert centroid(ABC) == pytest.approx([0.626522, 0.779404], abs=1e-6)
    # cos: a 0.626522, b 0.5*0.626522 + 0.866025*0.779404 = 0.988244, c 0.779404 -> (cos+1)/2
    assert anchor_rewards(ABC, ["a", "b", "c"], "centroid") == pytest.approx([0.813261, 0.994122, 0.889702], abs=1e-6)


def test_length_penalty_only_hits_longer_than_median():
    # words 2, 4, 8 -> median 4; penalty 0.5 * max(0, len/4 - 1) = 0, 0, 0.5
    r = anchor_rewards(ABC, ["a b", "a b c d", "a b c d e f g h"], "medoid", length_weight=0.5)
    assert r == pytest.approx([0.75, 1.0, 0.433013], abs=1e-6)
    r = anchor_rewards(ABC, ["a b", "a b c d", "a b c d e f g h"], "medoid", length_weight=3.0)
    assert r[2] == 0.0  # 0.933 - 3 clipped at 0


def test_empty_response_gets_zero_and_is_not_an_anchor():
    # without the empty row, medoid of {a, c} is a tie -> a (lowest index); c: (0+1)/2 = 0.5
    assert anchor_rewards(ABC, ["a", "  ", "c"], "medoid") == pytest.approx([1.0, 0.0, 0.5])
    assert anchor_rewards(ABC, ["", "", ""], "centroid").tolist() == [0.0, 0.0, 0.0]


def test_similarity_diagnostics():
    d = similarity_diagnostics(ABC, ["Hello world.", "hello   WORLD", "bye"])
    assert d["mean_pairwise_similarity"] == pytest.approx((0.5 + 0.0 + 0.866025) / 3, abs=1e-6)
    assert d["share_pairs_above_0.95"] == 0.0
    assert d["unique_responses"] == 2.0  # case, spacing and trailing punctuation ignored
    d = similarity_diagnostics(U(0, 0, 10, 90), ["a", "b", "c", "d"])  # 6 pairs, above 0.95: (0,0), 0-10 twice
    assert d["share_pairs_above_0.95"] == pytest.approx(3 / 6)


# Two clusters: A = -10, 0, 10 degrees (largest, anchor = 0 degrees by symmetry), B = 90, 100.
# cos to anchor: A cos10 = 0.984808, 1, 0.984808; B 0, cos100 = -0.173648.
TWO = U(-10, 0, 10, 90, 100)
EXPECTED = {
    "simple": [1, 1, 1, 0, 0],
    "continuous": [0.992404, 1.0, 0.992404, 0.5, 0.413176],  # (cos+1)/2
    "kde": [0.926853, 1.0, 0.926853, 0.006738, 0.002828],  # exp((cos-1)/0.2), max already 1
    "banded": [0.996202, 1.0, 0.996202, -0.75, -0.793412],  # A 0.5+0.5u, B -1+0.5u
}


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_cluster_variants_on_two_clusters(variant):
    labels, k, _ = select_clusters(TWO, 2, 4, seed=0)
    assert k == 2 and labels.tolist() == [0, 0, 0, 1, 1]
    r, anchor = variant_rewards(TWO, labels, variant, tau=0.2)
    assert anchor == pytest.approx([1.0, 0.0], abs=1e-9)
    assert r == pytest.approx(EXPECTED[variant], abs=1e-6)


def test_kde_is_scaled_to_max_one():
    # A = -10, 10 (anchor 0 degrees, nobody on it): raw exp((0.984808-1)/0.2) = 0.926853 for both;
    # B = 90: exp(-5) / 0.926853 = 0.007270
    E = U(-10, 10, 90)
    labels, k, _ = select_clusters(E, 2, 4, seed=0)
    assert k == 2
    assert variant_rewards(E, labels, "kde")[0] == pytest.approx([1.0, 1.0, 0.007270], abs=1e-6)


def test_k_chosen_by_silhouette():
    blobs = U(-5, 0, 5, 115, 120, 125, 235, 240, 245)  # three tight, well-separated blobs
    labels, k, sil = select_clusters(blobs, 2, 4, seed=0)
    assert k == 3 and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and sil > 0.9
    # duplicates within each cluster: every a(i) = 0 so the silhouette is exactly 1; only 2 distinct -> k = 2
    assert select_clusters(U(0, 0, 90, 90), 2, 4, seed=0)[1:] == (2, pytest.approx(1.0))
    # near-identical responses (or too few) -> one cluster
    assert select_clusters(U(0, 1, 2, 3), 2, 4, seed=0)[1:] == (1, 0.0)
    assert select_clusters(U(0, 90), 2, 4, seed=0)[1] == 1


def test_novelty_bonus_values():
    assert novelty_bonus(U(0)[0], []) == 0.0  # empty buffer: no bonus
    assert novelty_bonus(U(0)[0], list(U(0))) == pytest.approx(0.0)
    assert novelty_bonus(U(90)[0], list(U(0))) == pytest.approx(1.0)
    assert novelty_bonus(U(45)[0], list(U(0, 90))) == pytest.approx(1 - math.sqrt(0.5))  # 0.292893


def _fake_ctx(table):
    return RewardContext(rng=np.random.default_rng(0), state={"_embedder": {"fake": FakeEmbedder(table)}})


def test_cluster_vote_novelty_buffer_and_empty_responses():
    vecs = dict(zip("abcde", U(-10, 0, 10, 90, 100))) | dict(zip("ABCDE", U(80, 90, 100, 180, 190))) | {"": U(45)[0]}
    ctx = _fake_ctx(vecs)
    reward = Reward("cluster_vote", {"cluster_vote": ClusterParams(model="fake", novelty=0.5, novelty_buffer=2)})
    first = reward(group("abcde"), ctx)  # buffer empty: plain vote
    assert first.rewards == pytest.approx([1, 1, 1, 0, 0])
    assert first.diagnostics["k"] == 2 and first.diagnostics["largest_cluster_share"] == pytest.approx(0.6)
    assert reward(group("abcde"), ctx).rewards == pytest.approx([1, 1, 1, 0, 0], abs=1e-6)  # same anchor: 0 bonus
    # anchor at 90 degrees, buffer holds two anchors at 0: bonus 0.5 * (1 - cos 90) = 0.5 for the winners
    assert reward(group("ABCDE"), ctx).rewards == pytest.approx([1.5, 1.5, 1.5, 0, 0], abs=1e-6)
    assert len(ctx.state["cluster_vote"]["anchors"]) == 2
    # the anchor buffer is checkpointed (a resumed run continues with it); the embedder cache is not
    saved = ctx.state_dict()
    assert "_embedder" not in saved and len(saved["cluster_vote"]["anchors"]) == 2
    fresh = _fake_ctx(vecs)
    fresh.load_state_dict(saved)
    assert reward(group("abcde"), fresh).rewards == pytest.approx(reward(group("abcde"), ctx).rewards)
    banded = Reward("cluster_vote", {"cluster_vote": ClusterParams(model="fake", variant="banded")})
    out = banded(group(["a", "b", "", "c", "d", "e"]), _fake_ctx(vecs))
    assert out.rewards[2] == -1.0 and out.rewards[1] == pytest.approx(1.0)
    assert out.diagnostics["largest_cluster_share"] == pytest.approx(0.5)


def test_embedder_error_names_the_model():
    with pytest.raises(EmbedderError, match="no-such-embedder-dir"):
        get_embedder({}, "/nonexistent/no-such-embedder-dir")


# --- the real bundled all-MiniLM-L6-v2, loaded once for this module ---

PARAPHRASES = [
    "The cat is sleeping on the sofa.",
    "A cat sleeps on the couch.",
    "On the sofa, the cat is asleep.",
    "The kitty is napping on the couch.",
]
ODD = "Interest rates were raised by the central bank."


@pytest.fixture(scope="module")
def minilm_state():
    state = {}
    get_embedder(state)
    return state


def _ctx(state):
    return RewardContext(rng=np.random.default_rng(0), state={"_embedder": state["_embedder"]})


def test_minilm_medoid_ranks_the_unrelated_answer_last(minilm_state):
    out = Reward("embedding_medoid")(group(PARAPHRASES + [ODD]), _ctx(minilm_state))
    assert int(np.argmin(out.rewards)) == 4 and out.rewards[4] < min(out.rewards[:4]) - 0.1
    assert all(0.0 <= r <= 1.0 for r in out.rewards) and max(out.rewards) == pytest.approx(1.0, abs=1e-5)
    assert out.diagnostics["unique_responses"] == 5.0


def test_minilm_cluster_vote_rewards_the_paraphrases(minilm_state):
    odd = [ODD, "The central bank raised interest rates."]
    out = Reward("cluster_vote")(group(PARAPHRASES + odd), _ctx(minilm_state))
    assert out.rewards == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert out.diagnostics["k"] == 2 and out.diagnostics["largest_cluster_share"] == pytest.approx(4 / 6)
