"""The greedy probe of the answer prior against hand-counted answers (the rules are prior_monitor's)."""
from ttrl.config import SafeguardConfig
from ttrl.data import Query
from ttrl.prior_probe import GreedyProbe

QUERIES = [Query(id=f"q{i}", prompt="Describe what you see.") for i in range(10)]
SHAPES = ["circle", "square", "triangle", "circle", "square", "triangle", "circle", "square", "triangle", "circle"]
COLOURS = ["red", "blue", "green", "yellow", "red", "blue", "green", "yellow", "red", "blue"]


def described(shapes):
    return [f"A {c} {s} on a white background." for c, s in zip(COLOURS, shapes)]


class Answers:
    """Greedy answers in the order given, one list per call (the probe calls once for the base, once per check)."""

    def __init__(self, *calls):
        self.calls, self.seen = list(calls), []

    def __call__(self, queries):
        self.seen.append([q.id for q in queries])
        return self.calls.pop(0)


def test_a_shape_taking_over_the_greedy_descriptions_is_caught():
    # the tiny-omni failure: colours keep varying, the shape word goes to every description
    p = SafeguardConfig(prior_probe_every=2, prior_max_share=0.75, prior_min_items=8)
    answers = Answers(described(SHAPES), described(SHAPES[:5] + ["triangle"] * 5), described(["triangle"] * 10))
    probe = GreedyProbe(p, QUERIES, answers)
    assert [probe.due(s) for s in (1, 2, 3, 4)] == [False, True, False, True]
    probe.measure_base()
    probe.measure_base()  # once only
    assert probe.check() is None  # 'triangle' in 6 of 10 (base 3): under the 0.75 floor
    assert probe.row()["probe/global:text/top_word"] == "triangle"
    assert probe.row()["probe/global:text/top_word_share"] == 0.6
    reason = probe.check()
    assert reason.startswith("greedy probe of 10 items: answer-prior collapse: the word 'triangle' is in 100%")
    assert "(base 30%)" in reason
    assert answers.seen == [[q.id for q in QUERIES]] * 3  # the same items every time, base first


def test_one_yes_no_answer_everywhere_is_caught_against_the_base_split():
    p = SafeguardConfig(prior_probe_every=1, prior_min_items=8)  # default 0.9 floor, margin 0.25
    base = ["yes", "no"] * 5  # base share 0.5
    probe = GreedyProbe(p, QUERIES, Answers(base, ["no"] * 9 + ["yes"], ["no"] * 10))
    probe.measure_base()
    assert probe.check() is None  # 90%: not above max(0.9, 0.5 + 0.25)
    assert "'no' is the majority answer of 100% of the last 10 items with answer set 'global:yes/no'" in probe.check()


def test_off_or_without_items_the_probe_never_runs_and_its_base_survives_a_resume():
    assert not GreedyProbe(SafeguardConfig(), QUERIES, Answers()).due(2)  # prior_probe_every 0: off
    assert not GreedyProbe(SafeguardConfig(prior_probe_every=1), [], Answers()).due(1)
    probe = GreedyProbe(SafeguardConfig(prior_probe_every=1), QUERIES, Answers(described(SHAPES)))
    probe.measure_base()
    again = GreedyProbe(SafeguardConfig(prior_probe_every=1), QUERIES, Answers())  # no calls left: must not answer
    again.load_state_dict(probe.state_dict())
    again.measure_base()
    assert again.base == described(SHAPES)
