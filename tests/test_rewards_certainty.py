"""Certainty rewards (URLVR) against hand values, and the sampler's token statistics on the real model."""
import math

import numpy as np
import pytest
import torch

from ttrl.data import Query
from ttrl.rewards import Group, Reward, RewardContext
from ttrl.rollout import TokenStats


def stats(logprobs, entropy, sc):
    return TokenStats(np.array(logprobs), np.array(entropy), np.array(sc))


GROUP = Group(Query("q", "?"), ("a", "b", ""), ("1", "2", None), (0, 1, None), (
    stats([-0.5, -1.5], [1.0, 3.0], [2.0, 4.0]),
    stats([-0.1], [0.2], [6.0]),
    stats([], [], []),  # an empty completion gets 0
))


def run(spec, params=None):
    return Reward(spec, params)(GROUP, RewardContext(rng=np.random.default_rng(0))).rewards


def test_hand_values_length_normalised():
    assert run("self_certainty") == pytest.approx([3.0, 6.0, 0.0])
    assert run("token_entropy") == pytest.approx([-2.0, -0.2, 0.0])
    assert run("trajectory_logprob") == pytest.approx([-1.0, -0.1, 0.0])


def test_hand_values_summed():
    from ttrl.rewards.certainty import LengthParams

    p = LengthParams(length_normalise=False)
    assert run("trajectory_logprob", {"trajectory_logprob": p}) == pytest.approx([-2.0, -0.1, 0.0])


def test_needs_token_stats():
    assert Reward("self_certainty + majority").needs == {"token_stats"}
    with pytest.raises(ValueError, match="token statistics"):
        Reward("self_certainty")(Group(Query("q", "?"), ("a",), ("1",), (0,)), RewardContext(np.random.default_rng(0)))


@pytest.mark.slow
def test_sampler_token_stats_match_a_forward_pass(policy):
    prompt = policy.render(Query("q", "Calculate 3 + 4."), "Give the final answer as a single number.")
    comps = policy.generate([prompt], 3, temperature=0.8, max_new_tokens=10, batch_size=8, seed=0, token_stats=True)[0]
    lp, mask = policy.token_logprobs(comps, temperature=0.8)
    vocab = policy.model.get_output_embeddings().weight.shape[0]
    for b, c in enumerate(comps):
        n = len(c.ids)
        assert c.stats.logprobs.shape == (n,)
        # recorded at the sampling T while sampling == recomputed by a forward pass, up to bf16 matmul rounding
        # (logits ~20 carry ~0.1 absolute error in bf16)
        diff = np.abs(c.stats.logprobs - lp[b, :n].detach().numpy())
        assert diff.mean() < 0.05 and diff.max() < 0.25, diff
        assert (c.stats.entropy >= -1e-4).all() and (c.stats.entropy <= math.log(vocab) + 1e-3).all()
        assert (c.stats.self_certainty >= -1e-4).all()
    plain = policy.generate([prompt], 3, temperature=0.8, max_new_tokens=10, batch_size=8, seed=0)[0]
    assert [c.ids for c in plain] == [c.ids for c in comps] and plain[0].stats is None
    assert torch.is_grad_enabled()
