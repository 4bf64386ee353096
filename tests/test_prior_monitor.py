"""The cross-item answer-prior monitor against hand-counted windows."""
import json
import pickle

import pytest

from ttrl.config import SafeguardConfig
from ttrl.data import Query
from ttrl.prior_monitor import AnswerPriorMonitor, answer_kind, base_shares_from, base_word_shares_from, monitor_key, top_share

K = "options:4"


def feed(mon, answers, key=K):
    """One item per step; the reasons returned, by item index."""
    return {i: r for i, a in enumerate(answers) if (r := mon.update([(key, a)]))}


def test_one_letter_everywhere_is_caught_after_min_items():
    mon = AnswerPriorMonitor(SafeguardConfig(), base_shares={K: 0.41})  # the ARC-Easy base of issue 16
    fired = feed(mon, ["A"] * 20)
    assert sorted(fired) == [15, 16, 17, 18, 19]  # from the 16th item (prior_min_items) on
    assert "'A' is the majority answer of 100% of the last 16 items" in fired[15]
    assert "base 41%, threshold 90%" in fired[15]


def test_a_varied_stream_never_fires():
    mon = AnswerPriorMonitor(SafeguardConfig(), base_shares={K: 0.41})
    assert feed(mon, list("ABCD") * 20) == {}
    assert mon.shares()[K] == ("A", 0.25, 32)


def test_threshold_is_base_share_plus_margin_when_higher():
    p = SafeguardConfig(prior_window=50, prior_min_items=50)
    assert AnswerPriorMonitor(p, {K: 0.7}).threshold(K) == pytest.approx(0.95)
    assert AnswerPriorMonitor(p, {K: 0.41}).threshold(K) == 0.9
    # 47 of 50 = 0.94: not above 0.95; 48 of 50 = 0.96: above
    assert feed(AnswerPriorMonitor(p, {K: 0.7}), ["A"] * 47 + ["B"] * 3) == {}
    assert list(feed(AnswerPriorMonitor(p, {K: 0.7}), ["A"] * 48 + ["B"] * 2)) == [49]
    # a base that already gives one answer 80% of the time cannot collapse past 0.8 + 0.25
    assert feed(AnswerPriorMonitor(p, {K: 0.8}), ["A"] * 60) == {}


def test_base_measured_from_the_first_full_window():
    mon = AnswerPriorMonitor(SafeguardConfig())  # window 32, no base given
    assert feed(mon, ["A", "B"] * 16) == {} and mon.base == {K: 0.5}  # no verdict before the base is known
    # then only A: after m more items the window holds (32 - m) / 2 + m A's (m even): share (32 + m) / 64;
    # m = 25 -> 28/32 = 0.875, m = 26 -> 58/64 = 0.906 > max(0.9, 0.5 + 0.25)
    fired = feed(mon, ["A"] * 30)
    assert min(fired) == 25  # the 26th item after the first window


def test_answer_sets_are_separate_and_unparsed_items_skipped():
    mon = AnswerPriorMonitor(SafeguardConfig(prior_window=8, prior_min_items=8), {K: 0.25, "global": 0.5})
    reason = None
    for i in range(8):
        reason = mon.update([(K, "A"), ("global", "yes" if i % 2 else "no"), ("global", None)])
    assert reason and "options:4" in reason and "global" not in reason
    assert mon.shares()["global"] == ("no", 0.5, 8)


def test_off_and_state_round_trip():
    assert feed(AnswerPriorMonitor(SafeguardConfig(prior_window=0), {K: 0.0}), ["A"] * 40) == {}
    a = AnswerPriorMonitor(SafeguardConfig())
    stream = ["A", "B", "C"] * 12 + ["A"] * 30
    feed(a, stream[:40])
    b = AnswerPriorMonitor(SafeguardConfig())
    state = pickle.loads(pickle.dumps(a.state_dict()))
    json.dumps(state)  # plain data
    b.load_state_dict(state)
    assert feed(a, stream[40:]) == feed(b, stream[40:]) != {}
    assert a.state_dict() == b.state_dict()


def test_base_shares_from_base_answers():
    pairs = [(K, "A"), (K, "A"), (K, "B"), (K, None), ("global", "yes"), ("global", "no")]
    assert base_shares_from(pairs) == {K: pytest.approx(2 / 3), "global": 0.5}
    assert top_share([]) == (None, 0.0, 0)


@pytest.mark.parametrize("answer,kind", [("yes", "yes/no"), ("No.", "yes/no"), (" TRUE ", "yes/no"), ("42", "number"),
                                         ("-1,450.5", "number"), ("red", "text"), ("no idea", "text"), ("4 apples", "text")])
def test_answer_kind(answer, kind):
    assert answer_kind(answer) == kind


def test_free_answers_are_watched_per_kind_so_a_yes_no_collapse_shows():
    """easy-vqa-like: 6 colour questions answered with varied colours and 4 yes/no questions per round. Base:
    'no' on 60% of the yes/no questions. Adapted: 'no' on all of them. Counted in one free-answer set (the old
    key), 'no' is 40% of the majority answers and nothing fires; per kind it is 100% of the yes/no answers."""
    free = Query("q", "What colour is the shape?")
    colours = ["red", "green", "blue", "gray", "teal", "brown"]
    base = [(monitor_key(free, a), a) for _ in range(5) for a in colours + ["no", "no", "no", "yes", "yes"]]
    shares = base_shares_from(base)
    assert shares["global:yes/no"] == pytest.approx(0.6) and shares["global:text"] == pytest.approx(1 / 6)
    stream = [a for _ in range(6) for a in colours + ["no"] * 4]
    old = AnswerPriorMonitor(SafeguardConfig(), base_shares={"global": 0.3})
    assert not feed(old, stream, key="global")
    new = AnswerPriorMonitor(SafeguardConfig(), base_shares=shares)
    fired = {i: r for i, a in enumerate(stream) if (r := new.update([(monitor_key(free, a), a)]))}
    assert fired and "'no'" in next(iter(fired.values())) and "global:yes/no" in next(iter(fired.values()))
    # the 16th yes/no answer (min items 16) is item 39: 6 colours + 4 'no' per round of 10
    assert min(fired) == 39
    # lettered options keep their own key whatever the answer
    mc = Query("m", "Which?", ("x", "y", "z", "w"))
    assert monitor_key(mc, "A") == monitor_key(mc, "yes") == K and monitor_key(free, None) == "global"


def test_a_word_taking_over_free_text_answers_is_caught():
    """tiny-omni's open items: descriptions whose colour varies while the shape word collapses onto 'triangle'.
    No whole answer repeats, so only the word rule can see it; words every base answer has ('image', 'shows')
    can never pass their threshold (base 100% + margin)."""
    free = Query("q", "Describe what you see.")
    colours = ["red", "green", "blue", "gray", "teal", "brown", "yellow", "black"]
    shapes = ["triangle", "circle", "rectangle", "triangle"]
    base = [f"the image shows a {c} {shapes[i % 4]}" for i, c in enumerate(colours * 2)]
    keyed = [(monitor_key(free, a), a) for a in base]
    assert {k for k, _ in keyed} == {"global:text"}
    words = base_word_shares_from(keyed)["global:text"]
    assert words["triangle"] == pytest.approx(0.5) and words["image"] == 1.0 and "a" not in words
    cfg = SafeguardConfig(prior_min_items=8)
    mon = AnswerPriorMonitor(cfg, base_shares_from(keyed), base_word_shares_from(keyed))
    varied = [f"the image shows a {c} {s}" for c in colours for s in ("circle", "rectangle")][:12]
    assert not any(mon.update([(monitor_key(free, a), a)]) for a in varied)
    mon = AnswerPriorMonitor(cfg, base_shares_from(keyed), base_word_shares_from(keyed))
    fired = {i: r for i, a in enumerate(f"the image shows a {c} triangle" for c in colours * 2)
             if (r := mon.update([(monitor_key(free, a), a)]))}
    # 'triangle' in 100% of the window from item 7 on (8 items): over max(0.9, 0.5 + 0.25)
    assert min(fired) == 7 and "the word 'triangle'" in fired[7] and "'global:text'" in fired[7]
    assert mon.top_words() == {"global:text": ("triangle", 1.0)}  # logged every step
    # the word bases survive a checkpoint
    again = AnswerPriorMonitor(cfg)
    again.load_state_dict(json.loads(json.dumps(mon.state_dict())))
    assert again.base_words == mon.base_words and again.update([(monitor_key(free, "a green triangle"), "a green triangle")])


def test_the_monitor_sees_the_answer_the_update_pushes_towards():
    from ttrl.extractors import get_extractor
    from ttrl.group import Group
    from ttrl.trainer import GroupResult

    q, ex = Query("q", "Describe it."), get_extractor("text")
    g = Group.build(q, ["a red circle", "a red triangle", "a blue triangle", "  "], ex)
    # an embedding reward: the medoid (highest reward) wins, ties go to the first; unparsed samples never count
    assert GroupResult(g, [0.2, 0.9, 0.9, 5.0], True).rewarded_answer == "a red triangle"
    vote = Group.build(q, ["b", "a", "a", "c"], ex)
    assert GroupResult(vote, [0.0, 1.0, 1.0, 0.0], True).rewarded_answer == vote.majority_answer == "a"
    assert GroupResult(Group.build(q, ["", " "], ex), [1.0, 0.0], True).rewarded_answer is None
