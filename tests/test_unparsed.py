"""--unparsed neutral: unparsable samples get advantage 0, so a vote rewards the answer, not the format."""
import torch

from ttrl.grpo import group_advantages
from ttrl.trainer import _neutral_unparsed


def test_unparsed_samples_sit_at_the_parsed_mean_by_hand():
    rewards, classes = [1.0, 1.0, 0.0, 0.0, 0.0], [0, 0, 1, None, None]
    assert _neutral_unparsed(rewards, classes) == [1.0, 1.0, 0.0, 2 / 3, 2 / 3]
    adv = group_advantages(torch.tensor(_neutral_unparsed(rewards, classes)))
    assert torch.allclose(adv[3:], torch.zeros(2), atol=1e-6)  # neither pushed up nor down
    assert adv[0] > 0 > adv[2]  # the vote between parsed answers is kept
    # with the reward as given, the two unparsable samples are pushed down like the wrong parsed one
    plain = group_advantages(torch.tensor(rewards))
    assert plain[3] < 0 and torch.isclose(plain[3], plain[2])


def test_a_group_with_only_format_differences_carries_no_signal():
    """All parsed samples agree and the rest did not parse: a vote would reward parsing; neutral gives nothing."""
    rewards, classes = [1.0, 1.0, 0.0, 0.0], [0, 0, None, None]
    assert group_advantages(torch.tensor(_neutral_unparsed(rewards, classes))) is None
    assert _neutral_unparsed([0.0, 0.0], [None, None]) == [0.0, 0.0]  # nothing parsed: unchanged (the gate skips it)


def test_balanced_advantages_by_hand():
    """--balance-answers: each written answer's mean advantage over the step is removed (per answer set)."""
    from ttrl.balance import balanced, features

    names = ["a1", "a2", "a3", "b1", "b2", "u", "a_other_set"]
    advs = [1.0, 1.0, -1.0, -1.0, 1.0, -0.5, 2.0]
    keys = [("options:4", "A")] * 3 + [("options:4", "B")] * 2 + [("options:4", None), ("options:3", "A")]
    feats = [features(k, a) for k, a in keys]
    out = dict(zip(names, balanced(advs, feats)))
    assert out["a1"] == out["a2"] == 1.0 - 1 / 3 and out["a3"] == -1.0 - 1 / 3
    assert out["b1"] == -1.0 and out["b2"] == 1.0  # B's mean is already 0
    assert out["u"] == -0.5  # unparsable: untouched
    assert out["a_other_set"] == 0.0  # 'A' among 3 options is another answer than 'A' among 4
    # a step that pushes one letter up everywhere (the answer prior) leaves no net push on it
    assert abs(sum(out[n] for n, k in zip(names, keys) if k == ("options:4", "A"))) < 1e-12


def test_word_balanced_advantages_by_hand():
    """--balance-unit word: no word of free-text answers gains across the step, item contrasts survive."""
    from ttrl.balance import balanced, features

    answers = ["a teal circle", "a teal triangle", "a red triangle", "a red circle"]
    feats = [features("global:text", a, "word") for a in answers]
    assert feats[0] == {("global:text", "teal"), ("global:text", "circle")}  # 3+ letters: 'a' is no word
    # item 1 prefers its triangle, item 2 its triangle too: a push of 'triangle' everywhere (the shape prior)
    out = balanced([-1.0, 1.0, 1.0, -1.0], feats)
    assert all(abs(x) < 1e-12 for x in out)  # entirely the word prior: nothing is left
    # item 1 prefers triangle, item 2 circle: no word gains overall, and the update keeps the contrast as it was
    out = balanced([-1.0, 1.0, -1.0, 1.0], feats)
    assert out == [-1.0, 1.0, -1.0, 1.0]
    # by hand: words teal (0, 1), circle (0, 3), triangle (1, 2), red (2, 3); a = (1, 0, 0, 0) has one solution
    # with every word's sum zero closest to a: a - P a, P the projection on the span of the word indicators
    out = balanced([1.0, 0.0, 0.0, 0.0], feats)
    assert [round(x, 12) for x in out] == [0.25, -0.25, 0.25, -0.25]
    for w in ("teal", "red", "circle", "triangle"):
        assert abs(sum(x for x, f in zip(out, feats) if ("global:text", w) in f)) < 1e-12
    assert features("k", None, "word") is None and features("k", "42", "word") == {("k", "42")}
