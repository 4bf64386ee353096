"""A few GRPO steps with a deterministic reward raise that reward on the real model."""
import numpy as np
import pytest

from ttrl.config import GRPOConfig, SamplingConfig
from ttrl.data import Query
from ttrl.extractors import get_extractor
from ttrl.rewards import REWARDS, Reward, RewardOutput, register_reward
from ttrl.trainer import Trainer

pytestmark = pytest.mark.slow

QUERIES = [Query("a", "Tell me about the moon."), Query("b", "Describe a cat.")]


def brevity(group, params, ctx):
    return RewardOutput([-len(r) / 100 for r in group.responses])


@pytest.fixture
def brevity_reward():
    register_reward("test_brevity", help="test only: shorter is better")(brevity)
    yield Reward("test_brevity")
    del REWARDS["test_brevity"]


def mean_reward(policy, reward, seed):
    from ttrl.rewards import Group, RewardContext

    groups = policy.generate([policy.render(q, "") for q in QUERIES], 8, temperature=1.0, max_new_tokens=32,
                             batch_size=16, seed=seed)
    ctx = RewardContext(rng=np.random.default_rng(0))
    return float(np.mean([reward(Group(q, tuple(c.text for c in g), (), ()), ctx).rewards
                          for q, g in zip(QUERIES, groups)]))


def test_grpo_steps_raise_a_deterministic_reward(brevity_reward):
    from ttrl.backends.causal import CausalBackend
    from ttrl.config import ModelConfig

    policy = CausalBackend(ModelConfig(), need_reference=True)  # its own adapter: other tests see a fresh one
    before = mean_reward(policy, brevity_reward, seed=123)
    trainer = Trainer(policy, get_extractor("text"), brevity_reward,
                      SamplingConfig(n_votes=8, n_train=8, temperature=1.0, max_new_tokens=32, batch_size=16),
                      GRPOConfig(lr=2e-3, kl_coef=0.001), instruction="", seed=0)
    stats = [trainer.step(QUERIES).stats for _ in range(4)]
    after = mean_reward(policy, brevity_reward, seed=123)
    assert all(s.groups_trained == 2 for s in stats)
    assert stats[-1].update.kl > 0
    # responses start near the 32-token cap (~ -1.5); the reward must rise by a clear margin
    print("brevity reward before/after:", before, after)
    assert after > before + 0.3, (before, after, [s.reward_mean for s in stats])


def by_query(group, params, ctx):
    """Query 'a': every sample 1 (a unanimous group); 'b': 1, 0, 1, 0, ..."""
    n = len(group.responses)
    return RewardOutput([1.0] * n if group.query.id == "a" else [float(i % 2 == 0) for i in range(n)])


@pytest.mark.parametrize("baseline, trained", [("group", 1), ("batch", 2)])
def test_batch_baseline_trains_the_unanimous_group_too(policy, baseline, trained):
    register_reward("test_by_query", help="test only: fixed rewards per query")(by_query)
    try:
        trainer = Trainer(policy, get_extractor("text"), Reward("test_by_query"),
                          SamplingConfig(n_votes=4, n_train=4, temperature=1.0, max_new_tokens=4, batch_size=8),
                          GRPOConfig(lr=0.0, adv_baseline=baseline), instruction="", seed=0)
        res = trainer.step(QUERIES)
    finally:
        del REWARDS["test_by_query"]
    assert res.stats.groups_trained == trained
    assert [g.trained for g in res.groups] == [baseline == "batch", True]
