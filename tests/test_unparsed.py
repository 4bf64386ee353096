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
