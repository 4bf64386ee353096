"""The lean rollout engine (policy/decode.py) and prompt-shared scoring, against transformers' own paths."""
import pytest
import torch

from ttrl.data import Query
from ttrl.engines.base import pick


def test_pick_greedy_and_inverse_cdf_matches_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    assert pick(logits[:3], None, 1.0, None).tolist() == [0, 0, 0]
    gen = torch.Generator().manual_seed(0)
    draws = pick(logits, 0.5, 1.0, gen)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    expect = torch.softmax(logits[0] / 0.5, -1)
    assert torch.allclose(freq, expect, atol=0.01), (freq, expect)
    # same generator state, same draws
    assert torch.equal(pick(logits[:50], 0.5, 1.0, torch.Generator().manual_seed(3)),
                       pick(logits[:50], 0.5, 1.0, torch.Generator().manual_seed(3)))


def test_pick_top_p_keeps_the_smallest_prefix_reaching_p():
    # probabilities 0.5, 0.3, 0.15, 0.05 (in shuffled order): top_p 0.7 keeps the 0.5 and 0.3 tokens only
    p = torch.tensor([0.15, 0.5, 0.05, 0.3])
    logits = p.log().repeat(20000, 1)
    draws = pick(logits, 1.0, 0.7, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert freq[0] == 0 and freq[2] == 0
    assert abs(freq[1] - 0.625) < 0.015 and abs(freq[3] - 0.375) < 0.015
    # top_p below the largest probability still keeps that one token
    assert set(pick(logits[:100], 1.0, 0.1, torch.Generator().manual_seed(0)).tolist()) == {1}


def _prompts(policy, n=3):
    return [policy.render(Query(str(i), f"Calculate {i} + {3 * i + 2}."), "Give the final answer as a single number.")
            for i in range(n)]


@pytest.mark.slow
def test_lean_greedy_matches_hf_generate(policy):
    ps = _prompts(policy)
    saved = policy.cfg.decoder
    try:
        policy.cfg.decoder = "lean"
        lean = policy.generate(ps, 1, temperature=None, max_new_tokens=16, batch_size=8, seed=0, token_stats=True)
        policy.cfg.decoder = "hf"
        hf = policy.generate(ps, 1, temperature=None, max_new_tokens=16, batch_size=8, seed=0, token_stats=True)
    finally:
        policy.cfg.decoder = saved
    for a, b in zip(lean, hf):
        assert a[0].ids == b[0].ids and a[0].finished == b[0].finished and a[0].prompt_ids == b[0].prompt_ids
        assert abs(a[0].stats.logprobs - b[0].stats.logprobs).max() < 1e-3
        assert abs(a[0].stats.entropy - b[0].stats.entropy).max() < 1e-3


@pytest.mark.slow
def test_lean_sampling_groups_stop_at_eos_and_record_stats(policy):
    ps = _prompts(policy, 2)
    a = policy.generate(ps, 6, temperature=1.0, max_new_tokens=24, batch_size=12, seed=4, token_stats=True)
    b = policy.generate(ps, 6, temperature=1.0, max_new_tokens=24, batch_size=12, seed=4, token_stats=True)
    assert [[c.ids for c in g] for g in a] == [[c.ids for c in g] for g in b]
    comps = [c for g in a for c in g]
    assert len({c.ids for c in comps}) > 2  # sampling, not six copies of one answer
    assert any(c.finished for c in comps)  # some rows left the batch early
    for c in comps:
        assert c.finished == (c.ids[-1] in policy.eos_ids) and policy.eos_ids.isdisjoint(c.ids[:-1])
        assert len(c.stats.logprobs) == len(c.ids) and (c.stats.logprobs <= 0).all()
    # the recorded log-probs are the scorer's, up to float rounding
    with torch.no_grad():
        lp, mask = policy.token_logprobs(comps, temperature=1.0)
    for b_, c in enumerate(comps):
        assert abs(lp[b_, :len(c.ids)].numpy() - c.stats.logprobs).max() < 1e-3


@pytest.mark.slow
def test_prompt_shared_scoring_equals_full_scoring_with_gradients(policy):
    groups = policy.generate(_prompts(policy, 2), 4, temperature=1.0, max_new_tokens=12, batch_size=8, seed=1)
    comps = [c for g in groups for c in g]
    lora_b = [p for n, p in policy.model.named_parameters() if "lora_B" in n]
    saved = [p.detach().clone() for p in lora_b]
    gen = torch.Generator().manual_seed(0)
    out = {}
    try:
        with torch.no_grad():
            for p in lora_b:
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
        for share in (False, True):
            policy.cfg.share_prompt = share
            policy.model.zero_grad()
            lp, mask = policy.token_logprobs(comps, temperature=0.7)
            (lp.sum() / mask.sum()).backward()
            grad = torch.cat([p.grad.flatten() for p in policy.trainable_parameters()])
            ref, _ = policy.token_logprobs(comps, temperature=0.7, reference=True)
            out[share] = (lp.detach(), mask, grad, ref)
    finally:
        policy.cfg.share_prompt = True
        policy.model.zero_grad()
        with torch.no_grad():
            for p, s in zip(lora_b, saved):
                p.copy_(s)
    (a, ma, ga, ra), (b, mb, gb, rb) = out[False], out[True]
    assert torch.equal(ma, mb)
    assert (a - b).abs().max() < 1e-3 and (ra - rb).abs().max() < 1e-3
    assert (ga - gb).norm() / ga.norm() < 1e-3
    assert (a - ra).abs().max() > 1e-2  # the perturbed adapter really differs from the reference
