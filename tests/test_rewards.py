"""Rewards against hand-computed values."""
import math

import numpy as np
import pytest

from ttrl.data import Query
from ttrl.group import Group as VoteGroup
from ttrl.group import majority_class
from ttrl.rewards import Group, Reward, RewardContext, RewardError


def group(classes):
    answers = tuple(None if c is None else f"a{c}" for c in classes)
    return Group(Query("q", "?"), tuple("r" for _ in classes), answers, tuple(classes))


def ctx(seed=0):
    return RewardContext(rng=np.random.default_rng(seed))


def rewards(spec, classes, params=None, seed=0):
    return Reward(spec, params)(group(classes), ctx(seed)).rewards


def test_majority_basic_and_none_never_wins():
    # None is the most common outcome here but never wins the vote
    assert rewards("majority", [0, None, None, None, 1, 0]) == [1, 0, 0, 0, 0, 1]


def test_majority_tie_goes_to_first_seen():
    assert majority_class([1, 0, 0, 1]) == 0  # ids are first-seen order, so 0 was seen first
    assert rewards("majority", [0, 1, 1, 0]) == [1, 0, 0, 1]


def test_majority_all_unparsable_gives_zero():
    assert rewards("majority", [None, None, None]) == [0, 0, 0]


def test_frequency_is_share_of_group_and_none_gets_nothing():
    assert rewards("frequency", [0, 0, 1, None]) == [0.5, 0.5, 0.25, 0.0]


# Group of 8 with counts a:5, b:2, c:1.
# H(P) = -(5/8 ln 5/8 + 2/8 ln 2/8 + 1/8 ln 1/8) = 0.900256; M = 3, ln 3 = 1.098612
# leave one a out: H(4,2,1) = 0.955700 -> (0.955700 - 0.900256) / 1.098612 = +0.050467
# leave one b out: H(5,1,1) = 0.796312 -> -0.094614
# leave one c out: H(5,2)   = 0.598270 -> -0.274880
CLASSES = [0, 0, 0, 0, 0, 1, 1, 2]
LOO = {0: 0.050467, 1: -0.094614, 2: -0.274880}
FREQ = {0: 5 / 8, 1: 2 / 8, 2: 1 / 8}


def test_entropy_only_is_leave_one_out_change():
    assert rewards("entropy", CLASSES) == pytest.approx([LOO[c] for c in CLASSES], abs=1e-6)


def test_ttrv_per_sample_form():
    expected = [FREQ[c] + 0.75 * LOO[c] for c in CLASSES]  # a: 0.662850, b: 0.179040, c: -0.081160
    assert rewards("ttrv", CLASSES) == pytest.approx(expected, abs=1e-6)
    assert expected[0] == pytest.approx(0.662850, abs=1e-6)


def test_ttrv_paper_form_is_group_constant_and_warns():
    from ttrl.rewards.voting import TTRVParams

    r = Reward("ttrv", {"ttrv": TTRVParams(alpha=0.75, form="paper")})
    out = r(group(CLASSES), ctx())
    # r2 = -H/ln M = -0.900256 / 1.098612 = -0.819448, the same for every sample
    assert out.rewards == pytest.approx([FREQ[c] - 0.75 * 0.819448 for c in CLASSES], abs=1e-6)
    assert r.group_constant_terms() == ["ttrv"]
    assert Reward("ttrv").group_constant_terms() == []


def test_paper_form_warns_in_session(tmp_path):
    from ttrl.config import Config, apply_overrides
    from ttrl.data import DataError
    from ttrl.runlog import RunDir
    from ttrl.session import build_session

    cfg = apply_overrides(Config(), {"reward": {"reward": "ttrv", "reward_params": {"ttrv": {"form": "paper"}}},
                                     "data": {"data": str(tmp_path / "missing.jsonl")}}, "test")
    with pytest.warns(UserWarning, match="group-normalised advantages remove it"):
        with pytest.raises(DataError):  # stops at the data, before loading a model
            build_session(cfg, RunDir(tmp_path / "run", cfg))


def test_random_control_is_seeded_and_respects_p():
    from ttrl.rewards.control import RandomParams

    a = rewards("random", CLASSES, seed=3)
    assert a == rewards("random", CLASSES, seed=3)
    assert set(a) <= {0.0, 1.0}
    assert rewards("random", CLASSES, {"random": RandomParams(p=0.0)}) == [0.0] * 8
    assert rewards("random", CLASSES, {"random": RandomParams(p=1.0)}) == [1.0] * 8


def test_weighted_sum_of_named_rewards():
    out = Reward("frequency + 0.5*majority")(group([0, 0, 1, None]), ctx())
    assert out.rewards == [1.0, 1.0, 0.25, 0.0]


@pytest.mark.parametrize("spec,msg", [("majorty", "unknown reward 'majorty'"), ("2**majority", "cannot parse"),
                                      ("", "cannot parse")])
def test_bad_reward_specs(spec, msg):
    with pytest.raises(RewardError, match=msg):
        Reward(spec)


def test_vote_stats():
    g = VoteGroup(Query("q", "p"), ("a", "a", "b", "?"), ("a", "a", "b", None), (0, 0, 1, None))
    assert g.majority_answer == "a"
    s = g.vote_stats()
    assert s.majority_ratio == 0.5
    assert s.parsed == 0.75
    assert s.unique_answers == 2
    # buckets 2/4, 1/4, 1/4 (None is a bucket)
    assert s.answer_entropy == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
