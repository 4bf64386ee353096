"""MBR / medoid reward against hand-computed WER, CER and chrF similarities."""
import pytest

from ttrl.config import Config, ConfigError
from ttrl.data import Query
from ttrl.rewards import Group, Reward, RewardContext, all_rewards
from ttrl.rewards.base import build_params
from ttrl.rewards.mbr import MBRParams, mbr_rewards, similarity, similarity_matrix


def group(answers):
    return Group(Query("q", "?"), tuple(a or "" for a in answers), tuple(answers), tuple(range(len(answers))))


A, B, C = "the cat sat", "the cat sat down", "a dog ran"


def test_wer_similarity_is_one_minus_wer_against_the_other_as_reference():
    assert similarity(A, B, "wer") == pytest.approx(0.75)  # ref B (4 words), hyp A: 1 deletion
    assert similarity(B, A, "wer") == pytest.approx(2 / 3)  # ref A (3 words), hyp B: 1 insertion
    assert similarity(A, C, "wer") == 0.0  # 3 substitutions of 3
    assert similarity(B, C, "wer") == 0.0  # 3 subs + 1 insertion = 4/3 > 1, capped at 0


def test_cer_and_chrf_similarity():
    assert similarity("abc", "abd", "cer") == pytest.approx(2 / 3)  # 1 substituted character of 3
    assert similarity("the cat sat", "the cat sat", "chrf") == pytest.approx(1.0)
    assert similarity("abc", "xyz", "chrf") == 0.0  # no shared character n-gram
    with pytest.raises(ValueError, match="wer, cer, chrf"):
        similarity("a", "b", "bleu")


def test_matrix_and_rewards_by_hand():
    S = similarity_matrix([A, B, C], "wer")
    assert S.ravel().tolist() == pytest.approx([1, 0.75, 0, 2 / 3, 1, 0, 0, 0, 1])
    r, diags = mbr_rewards([A, B, C], "wer")
    # r_A = (0.75 + 0) / 2, r_B = (2/3 + 0) / 2, r_C = 0: A is the MBR pick
    assert r == pytest.approx([0.375, 1 / 3, 0.0])
    assert diags["mbr_top_reward"] == pytest.approx(0.375)
    assert diags["mean_pairwise_similarity"] == pytest.approx((0.375 + 1 / 3) / 3)


def test_unparsable_answers_get_zero_and_are_not_peers():
    assert mbr_rewards([A, None, A], "wer")[0] == [1.0, 0.0, 1.0]
    assert mbr_rewards([None, B, "  "], "wer")[0] == [0.0, 1.0, 0.0]  # a lone parsed answer agrees with itself
    assert mbr_rewards([None, None], "wer")[0] == [0.0, 0.0]


def test_registered_reward_with_params():
    spec = all_rewards()["mbr"]
    assert spec.params is MBRParams and MBRParams().similarity == "wer"
    out = Reward("mbr")(group([A, B, C]), RewardContext(rng=None))
    assert out.rewards == pytest.approx([0.375, 1 / 3, 0.0])
    out = Reward("mbr", {"mbr": MBRParams("cer")})(group(["abc", "abd", "abd"]), RewardContext(rng=None))
    # abc: (2/3 + 2/3) / 2; abd: (2/3 + 1) / 2 each
    assert out.rewards == pytest.approx([2 / 3, 5 / 6, 5 / 6])


def test_config_validates_the_similarity_choice():
    cfg = Config()
    cfg.reward.reward_params = {"mbr": {"similarity": "chrf"}}
    assert build_params(cfg.reward.reward_params)["mbr"] == MBRParams("chrf")
    cfg.reward.reward_params = {"mbr": {"similarity": "bleu"}}
    with pytest.raises(ConfigError, match="similarity"):
        build_params(cfg.reward.reward_params)
