"""Evaluation metrics and the self-judge reward against hand-computed values."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from ttrl.data import Query
from ttrl.metrics import bleu, embedding_similarity, exact_match, maj_at_n, pass_at_k, rouge_l, sentence_bleu
from ttrl.rewards import Group, Reward, RewardContext
from ttrl.rewards.judge import JudgeParams, choose_anchor, judge_prompt, parse_score


# -- pass@k, maj@N ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4),          # c/n
    (5, 2, 2, 0.7),          # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 0, 3, 0.0),          # nothing correct
    (5, 3, 3, 1.0),          # n - c = 2 < k: every draw holds a correct sample
    (10, 1, 5, 0.5),         # 1 - C(9,5)/C(10,5) = 1 - 126/252
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_binomials_and_rejects_bad_args():
    assert pass_at_k(64, 7, 8) == pytest.approx(1 - math.comb(57, 8) / math.comb(64, 8))
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 0)


def test_maj_at_n():
    ok = lambda a: a == "5"
    assert maj_at_n(["5", "6", "5", None, None, None], ok) == 1.0  # None never wins
    assert maj_at_n(["6", "5", "5", "6"], ok) == 0.0  # tie goes to the first seen, "6"
    assert maj_at_n([None, None], ok) == 0.0


# -- BLEU, ROUGE-L, exact match --------------------------------------------------------------
def test_bleu_identical_and_hand_pair():
    s = "the cat sat on the mat"
    assert bleu([s], [s]) == pytest.approx(100.0)
    assert sentence_bleu(s, s) == pytest.approx(100.0)
    # one extra word, no brevity penalty: precisions 6/7, 5/6, 4/5, 3/4 -> geometric mean (3/7)^(1/4)
    assert bleu([s + " today"], [s]) == pytest.approx(100 * (3 / 7) ** 0.25, abs=1e-6)
    # one word short: all precisions 1, brevity penalty exp(1 - 7/6)
    assert sentence_bleu(s, s + " today") == pytest.approx(100 * math.exp(1 - 7 / 6), abs=1e-6)


class _TableEmbedder:
    """A lookup table of unit vectors, so the mean cosine can be computed by hand."""
    def encode(self, texts):
        vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.6, 0.8]}
        return np.array([vectors[t] for t in texts], dtype=np.float32)


def test_embedding_similarity_hand_values_and_the_bundled_embedder():
    # cos(a, a) = 1, cos(a, b) = 0, cos(c, a) = 0.6 -> mean 1.6 / 3
    assert embedding_similarity(["a", "a", "c"], ["a", "b", "a"], _TableEmbedder()) == pytest.approx(1.6 / 3)
    assert embedding_similarity([], [], _TableEmbedder()) == 0.0
    with pytest.raises(ValueError):
        embedding_similarity(["a"], [], _TableEmbedder())
    # the real all-MiniLM-L6-v2: identical = 1; a paraphrase is closer than an unrelated sentence
    ref = ["The image shows a red circle."]
    assert embedding_similarity(ref, ref) == pytest.approx(1.0, abs=1e-5)
    assert embedding_similarity(["I see a circle that is red."], ref) > embedding_similarity(["Stock prices fell."], ref) + 0.3


def test_rouge_l_identical_and_hand_pair():
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    # LCS "the cat on the mat" = 5 of 6 tokens each side: P = R = F = 5/6; mean with an identical pair
    pair = rouge_l(["the cat sat on the mat", "x y"], ["the cat is on the mat", "x y"])
    assert pair == pytest.approx((5 / 6 + 1.0) / 2)
    with pytest.raises(ValueError):
        rouge_l(["a"], [])


@pytest.mark.parametrize("pred,ref,expected", [
    ("The Eiffel Tower.", "eiffel tower", True),
    ("  an   apple ", "Apple", True),
    ("Paris, France", "paris france", True),
    ("Paris", "London", False),
    (None, "x", False),
])
def test_exact_match(pred, ref, expected):
    assert exact_match(pred, ref) is expected


# -- self-judge: pure parts ------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("8", 0.8),
    ("Score: 7/10", 0.7),
    ("7 out of 10", 0.7),
    ("10", 1.0),
    ("0", 0.0),
    ("**9**. The answer agrees.", 0.9),
    ("8.5", 0.85),
    ("11", None),        # out of range
    ("-3", None),        # negative is out of range, not 3
    ("2+3 =", None),     # the question restated: arithmetic, not a score
    ("2 + 3 = 5", None),
    ("2*3", None),
    ("2+3 = 5. Score 6", 0.6),
    ("excellent", None),
    ("", None),
])
def test_parse_score(text, expected):
    got = parse_score(text)
    assert got == (None if expected is None else pytest.approx(expected))


def test_judge_prompt_contains_question_anchor_response():
    p = judge_prompt("What is 2+3?", "It is 5.", "Six.")
    assert "What is 2+3?" in p and "It is 5." in p and "Six." in p
    assert p.index("It is 5.") < p.index("Six.")
    clipped = judge_prompt("q", "x" * 50, "r", max_chars=10)  # long answers are cut to bound the cost
    assert "x" * 10 + " ..." in clipped and "x" * 11 not in clipped


def group(responses, classes):
    answers = tuple(None if c is None else f"a{c}" for c in classes)
    return Group(Query("q1", "What is 2+3?"), tuple(responses), answers, tuple(classes))


def test_anchor_is_majority_response_else_first_non_empty():
    assert choose_anchor(group(["r0", "r1", "r2", "r3"], [0, 1, 1, None])) == "r1"
    assert choose_anchor(group(["", "r1", "r2"], [None, None, None])) == "r1"


class FakePolicy:
    """Records the calls; answers each judge prompt with a canned judgement."""

    def __init__(self, judgements):
        self.judgements, self.calls = judgements, []

    def render(self, query, instruction):
        return f"<user>{query.prompt}\n{instruction}</user>"

    def generate(self, prompts, n, **kw):
        self.calls.append((list(prompts), n, kw))
        return [[SimpleNamespace(text=t)] for t in self.judgements]


def test_self_judge_batches_one_greedy_call_and_maps_scores():
    pol = FakePolicy(["8", "Score: 3/10", "no idea"])
    out = Reward("self_judge")(group(["It is 5.", "6", "5"], [0, 1, 0]),
                               RewardContext(rng=np.random.default_rng(0), policy=pol))
    assert out.rewards == pytest.approx([0.8, 0.3, 0.5])
    assert out.diagnostics["judge_parsed"] == pytest.approx(2 / 3)
    assert out.diagnostics["judge_mean"] == pytest.approx(1.6 / 3)
    (prompts, n, kw), = pol.calls
    assert n == 1 and kw["temperature"] is None and kw["max_new_tokens"] == 8 and kw["batch_size"] == 32
    assert all("Reference answer:\nIt is 5." in p for p in prompts)  # majority class 0, first response
    assert "Candidate answer:\n6" in prompts[1]
    assert all(p.endswith("</user>Score:") for p in prompts)  # reply prefilled after the template


# -- self-judge with the real model ----------------------------------------------------------
@pytest.mark.slow
def test_self_judge_with_real_policy(policy):
    g = group(["The answer is 5.", "5", "The answer is 6."], [0, 0, 1])
    r = Reward("self_judge", {"self_judge": JudgeParams(max_new_tokens=4)})
    out = r(g, RewardContext(rng=np.random.default_rng(0), policy=policy))
    assert len(out.rewards) == 3
    assert all(0.0 <= x <= 1.0 for x in out.rewards)
    assert {"judge_parsed", "judge_mean"} <= set(out.diagnostics)
