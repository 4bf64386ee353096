"""Option-order voting (choice_orders.py): orders, the letter mapping by hand, and the vote it gives."""
import string
from collections import Counter

import numpy as np
import pytest

from ttrl.choice_orders import option_orders, reorder, to_original
from ttrl.config import Config, ConfigError, validate_config
from ttrl.data import Query
from ttrl.extractors import get_extractor
from ttrl.group import Group
from ttrl.seeds import derive
from ttrl.trainer import Trainer

Q = Query("q", "Which is a mammal?", ("trout", "whale", "eagle", "frog"))


def test_orders_start_with_the_original_and_are_distinct_and_seeded():
    a = option_orders(4, 4, np.random.default_rng(0))
    assert a[0] == (0, 1, 2, 3) and len(set(a)) == 4 and all(sorted(o) == [0, 1, 2, 3] for o in a)
    assert a == option_orders(4, 4, np.random.default_rng(0))
    assert option_orders(2, 4, np.random.default_rng(0)) == [(0, 1), (1, 0)]  # only 2! orders exist


def test_letters_map_back_to_the_option_chosen_by_hand():
    order = (2, 0, 3, 1)  # shown: A=eagle, B=trout, C=frog, D=whale
    shown = reorder(Q, order)
    assert shown.choices == ("eagle", "trout", "frog", "whale")
    assert to_original("D", order) == "B"  # whale is B in the original order
    assert to_original("A", order) == "C" and to_original(None, order) is None and to_original("E", order) is None
    assert all(shown.choices[string.ascii_uppercase.index(x)] == Q.choices[string.ascii_uppercase.index(
        to_original(x, order))] for x in "ABCD")


def test_a_letter_prior_splits_the_vote_and_content_agreement_keeps_it():
    """A model that always writes 'A' gets a unanimous vote on plain rollouts, but its 'A' names a different option
    in each order; one that always picks 'whale' agrees with itself in every order."""
    ext = get_extractor("choice")
    views = Trainer._shown(Q, 4, np.random.default_rng(0))
    assert sum(v.choices == Q.choices for v, _ in views) == 1  # the original order is one of the views
    letter_prior = [to_original("A", o) for _, o in views for _ in range(2)]
    content = [to_original(string.ascii_uppercase[v.choices.index("whale")], o) for v, o in views for _ in range(2)]
    g_prior = Group.build(Q, ["A"] * 8, ext, answers=letter_prior)
    g_content = Group.build(Q, ["x"] * 8, ext, answers=content)
    assert Group.build(Q, ["A"] * 8, ext).vote_stats().majority_ratio == 1.0
    assert g_prior.vote_stats().majority_ratio <= 0.5 and g_content.majority_answer == "B"
    assert g_content.vote_stats().majority_ratio == 1.0


def test_the_original_order_is_not_always_seen_first():
    """Ties go to the answer seen first: the original order must not always be first (it is the evaluation's)."""
    firsts = [Trainer._shown(Q, 4, np.random.default_rng(s))[0][1] for s in range(40)]
    assert 5 <= sum(o == (0, 1, 2, 3) for o in firsts) <= 20


def test_items_without_options_are_sampled_as_before():
    q = Query("t", "2 + 2 =")
    assert Trainer._shown(q, 2, np.random.default_rng(0)) == [(q, None), (q, None)]


def test_n_votes_must_split_over_the_orders():
    cfg = Config()
    cfg.sampling.choice_orders = 3
    with pytest.raises(ConfigError, match="split evenly"):
        validate_config(cfg)


@pytest.mark.slow
def test_a_real_step_votes_on_original_letters(policy):
    """SmolLM2 on a 4-option item with 2 orders: every recorded answer is the original letter of what was picked."""
    from ttrl.config import GRPOConfig, SamplingConfig
    from ttrl.rewards import Reward

    trainer = Trainer(policy, get_extractor("choice"), Reward("majority"),
                      SamplingConfig(n_votes=4, n_train=4, temperature=1.0, max_new_tokens=8, batch_size=8,
                                     choice_orders=2), GRPOConfig(lr=0.0, micro_batch=4), instruction="", seed=0)
    views = Trainer._shown(Q, 2, np.random.default_rng(derive(0, "choice_orders", 0)))
    (res,) = trainer.step([Q]).groups
    ext = get_extractor("choice")
    expect = [to_original(ext.extract(r, v.choices), o) for r, (v, o) in zip(res.group.responses,
                                                                            [views[0]] * 2 + [views[1]] * 2)]
    assert list(res.group.answers) == expect and res.group.query == Q
    # the letter most samples wrote, whatever option it named in their order (the answer-prior monitor watches it)
    written = [ext.extract(r, v.choices) for r, (v, _) in zip(res.group.responses, [views[0]] * 2 + [views[1]] * 2)]
    counts = Counter(x for x in written if x is not None)
    assert res.written == (counts.most_common(1)[0][0] if counts else None)


def test_a_letter_written_everywhere_is_an_answer_prior_collapse_the_vote_cannot_see():
    """Under option orders a model writing 'A' in every view splits the vote (no majority-answer collapse), but the
    letters written all agree: the monitor's written-letter key fires on them."""
    from ttrl.config import SafeguardConfig
    from ttrl.prior_monitor import AnswerPriorMonitor
    from ttrl.protocols.common import written_key

    mon = AnswerPriorMonitor(SafeguardConfig(prior_window=16, prior_min_items=16),
                             base_shares={"options:4": 0.4, written_key(Q): 0.4})
    letters = "ABCD"
    why = None
    for i in range(16):  # the vote's majority answers spread over the letters, the written letter is always 'A'
        why = mon.update([("options:4", letters[i % 4]), (written_key(Q), "A")])
    assert why is not None and why.count("answer-prior collapse") == 1  # only the written letters collapsed
    assert "'written:options:4'" in why and "'A'" in why
