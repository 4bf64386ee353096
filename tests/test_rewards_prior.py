"""prior_vote (the vote with the running answer prior removed) against hand-computed values."""
import copy
import json
import pickle

import numpy as np
import pytest

from ttrl.config import ConfigError
from ttrl.data import Query
from ttrl.rewards import Group, Reward, RewardContext
from ttrl.rewards.prior import PriorVoteParams, answer_set_key

ABCD = ("w", "x", "y", "z")


def group(letters, choices=ABCD):
    """A group of letter answers ('?' = unparsable), classes numbered in first-seen order."""
    answers = tuple(None if a == "?" else a for a in letters)
    seen: list[str] = []
    classes = []
    for a in answers:
        if a is None:
            classes.append(None)
            continue
        if a not in seen:
            seen.append(a)
        classes.append(seen.index(a))
    return Group(Query("q", "?", choices), tuple("r" for _ in answers), answers, tuple(classes))


def ctx():
    return RewardContext(rng=np.random.default_rng(0))


def reward(**params):
    return Reward("prior_vote", {"prior_vote": PriorVoteParams(**params)})


def test_globally_dominant_majority_loses_to_the_calibrated_vote():
    r, c = reward(decay=1.0, prior_strength=1.0), ctx()
    for _ in range(3):  # three items where every sample said A
        assert r(group("AAAAAAAA"), c).rewards == [1.0] * 8
    # m(A) = (3 + 1/4) / (3 + 1) = 0.8125, m(B) = (0 + 1/4) / 4 = 0.0625
    # score(A) = (5/8) / 0.8125 = 0.769231, score(B) = (3/8) / 0.0625 = 6 -> B wins
    out = r(group("AAAAABBB"), c)
    assert out.rewards == [0.0] * 5 + [1.0] * 3  # plain majority would give A 1.0
    assert Reward("majority")(group("AAAAABBB"), ctx()).rewards == [1.0] * 5 + [0.0] * 3
    assert out.diagnostics == pytest.approx({"flipped": 1.0, "winner_marginal": 0.0625, "top_marginal": 0.8125})
    # and the group joined the marginal afterwards: S(A) = 3.625, S(B) = 0.375, W = 4
    assert c.state["prior_vote"]["options:4"] == {"sums": {"A": 3.625, "B": 0.375}, "weight": 4.0}


def test_soft_form_is_the_calibrated_share():
    r, c = reward(decay=1.0, prior_strength=1.0, form="soft"), ctx()
    for _ in range(3):
        r(group("AAAAAAAA"), c)
    out = r(group("AAAAABBB"), c).rewards
    # q(A) = 0.769231 / 6.769231 = 0.113636 (plain majority: 1, frequency: 0.625); q(B) = 0.886364
    assert out == pytest.approx([0.113636] * 5 + [0.886364] * 3, abs=1e-6)


def test_decay_and_prior_break_a_tied_vote():
    r, c = reward(decay=0.5, prior_strength=1.0), ctx()
    r(group("AAAA"), c)
    r(group("BBBB"), c)
    # S(A) = 0.5, S(B) = 1, W = 1.5: m(A) = (0.5 + 0.25) / 2.5 = 0.3, m(B) = (1 + 0.25) / 2.5 = 0.5
    # tie 4-4: score(A) = 0.5 / 0.3 = 1.6667 > score(B) = 0.5 / 0.5 = 1 -> the rarer answer A wins
    out = r(group("BBBBAAAA"), c)
    assert out.rewards == [0.0] * 4 + [1.0] * 4 and out.diagnostics["winner_marginal"] == pytest.approx(0.3)
    c2 = ctx()
    r(group("AAAA"), c2)
    r(group("BBBB"), c2)
    soft = reward(decay=0.5, prior_strength=1.0, form="soft")(group("BBBBAAAA"), c2).rewards
    assert soft == pytest.approx([0.375] * 4 + [0.625] * 4)


def random_groups(rng, n_groups=60):
    for _ in range(n_groups):
        yield group(rng.choice(list("ABCD?"), size=int(rng.integers(1, 9)), p=[0.45, 0.2, 0.1, 0.05, 0.2]))


def test_first_group_and_beta_zero_are_plain_majority():
    maj = Reward("majority")
    assert reward()(group("BBACA?"), ctx()).rewards == maj(group("BBACA?"), ctx()).rewards  # no prior yet
    rng, r, c = np.random.default_rng(1), reward(beta=0.0, decay=0.9), ctx()
    for g in random_groups(rng):
        assert r(g, c).rewards == maj(g, ctx()).rewards


@pytest.mark.parametrize("form", ["hard", "soft"])
def test_unparsable_answers_never_outscore_parsed_ones(form):
    rng, r, c = np.random.default_rng(2), reward(form=form, decay=0.8), ctx()
    for g in random_groups(rng, 200):
        out = r(g, c).rewards
        none = [x for x, cl in zip(out, g.classes) if cl is None]
        parsed = [x for x, cl in zip(out, g.classes) if cl is not None]
        if none and parsed:
            assert max(none) <= min(parsed)
    before = copy.deepcopy(c.state)
    assert r(group("????"), c).rewards == [0.0] * 4 and c.state == before  # nothing to learn a prior from


def test_answer_sets_keep_separate_marginals():
    assert answer_set_key(Query("q", "?", ABCD)) == "options:4"
    assert answer_set_key(Query("q", "?", ("yes", "no", "maybe"))) == "options:3"
    assert answer_set_key(Query("q", "?")) == "global"
    assert answer_set_key(Query("q", "?", ("b", "a")), "option_texts") == answer_set_key(Query("q", "?", ("a", "b")), "option_texts")
    assert answer_set_key(Query("q", "?", ABCD), "global") == "global"
    r, c = reward(decay=1.0), ctx()
    for _ in range(5):
        r(group("AAAA"), c)
    assert r(group("AAAB", ("p", "q", "r")), c).rewards == [1.0, 1.0, 1.0, 0.0]  # 3 options: no prior yet
    assert r(group("AAAB"), c).rewards == [0.0, 0.0, 0.0, 1.0]  # 4 options: A's prior removed
    assert set(c.state["prior_vote"]) == {"options:4", "options:3"}


def test_free_answers_use_the_answers_seen_as_support():
    r, c = reward(decay=1.0, prior_strength=1.0), ctx()
    yes = Group(Query("q", "is it?"), ("r",) * 4, ("yes",) * 4, (0,) * 4)
    r(yes, c)
    mixed = Group(Query("q", "is it?"), ("r",) * 4, ("yes", "yes", "yes", "no"), (0, 0, 0, 1))
    # support {yes, no}: m(yes) = (1 + 1/2) / 2 = 0.75, m(no) = 0.25; score yes = 0.75/0.75 = 1 = no = 0.25/0.25 -> a tie,
    # broken by votes: yes wins
    assert r(mixed, c).rewards == [1.0, 1.0, 1.0, 0.0]
    # now S(yes) = 1.75, S(no) = 0.25, W = 2: m(yes) = 2.25/3 = 0.75, m(no) = 0.75/3 = 0.25 -> same; a 2-2 split flips to no
    split = Group(Query("q", "is it?"), ("r",) * 4, ("yes", "yes", "no", "no"), (0, 0, 1, 1))
    assert r(split, c).rewards == [0.0, 0.0, 1.0, 1.0]


def test_state_is_plain_data_and_resumes_exactly():
    rng, r, c = np.random.default_rng(3), reward(decay=0.9, form="soft"), ctx()
    groups = list(random_groups(rng, 40))
    for g in groups[:20]:
        r(g, c)
    json.dumps(c.state)  # plain dicts of floats: checkpointable as JSON or pickle
    resumed = RewardContext(rng=np.random.default_rng(0), state=pickle.loads(pickle.dumps(c.state)))
    for g in groups[20:]:
        assert r(g, c).rewards == r(g, resumed).rewards
    assert c.state == resumed.state


def test_bad_params_are_config_errors_and_flags_exist():
    with pytest.raises(ConfigError, match="prior_strength > 0"):
        PriorVoteParams(prior_strength=0.0)
    with pytest.raises(ConfigError):
        PriorVoteParams(decay=1.5)
    from ttrl.cli import build_parser, config_from_args
    from ttrl.rewards.base import build_params

    ns = build_parser().parse_args(["run", "--reward", "prior_vote", "--prior-vote-beta", "0.5", "--prior-vote-form", "soft"])
    cfg = config_from_args(ns)
    assert build_params(cfg.reward.reward_params)["prior_vote"] == PriorVoteParams(beta=0.5, form="soft")
