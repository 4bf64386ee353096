"""The llama.cpp rollout engine (policy/llamacpp.py) against the policy it exports."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ttrl.config import ConfigError
from ttrl.data import Query


def test_unsupported_models_get_a_clear_error():
    from ttrl.engines.llamacpp_export import _Layout

    with pytest.raises(ConfigError, match="supports model types"):
        _Layout(SimpleNamespace(model_type="gpt2"))
    llama3 = SimpleNamespace(model_type="llama", rope_parameters={"rope_type": "llama3"}, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(ConfigError, match="rope scaling"):
        _Layout(llama3)


def test_rope_permutation_interleaves_the_two_halves_of_each_head():
    from ttrl.engines.llamacpp_export import _permute

    # one head of dim 4: HF rows (x0, x1 | y0, y1) -> llama.cpp rows (x0, y0, x1, y1)
    w = np.arange(8).reshape(4, 2)
    assert _permute(w, 1)[:, 0].tolist() == [0, 4, 2, 6]
    assert _permute(np.arange(8).reshape(8, 1), 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def _prompts(policy, n=3):
    return [policy.render(Query(str(i), f"Calculate {i + 4} + {7 * i + 5}."), "Give the final answer as a single number.")
            for i in range(n)]


@pytest.fixture
def adapted(policy):
    """The shared policy with a strong random adapter (so the exported adapter matters), restored afterwards."""
    lora = {n: p for n, p in policy.model.named_parameters() if "lora_" in n}
    saved = {n: p.detach().clone() for n, p in lora.items()}
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in lora.items():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=gen)
    decoder, weights = policy.cfg.decoder, policy.cfg.llamacpp_weights
    yield policy
    policy.cfg.decoder, policy.cfg.llamacpp_weights = decoder, weights
    with torch.no_grad():
        for n, p in lora.items():
            p.copy_(saved[n])


def _greedy(policy, decoder, prompts):
    policy.cfg.decoder = decoder
    return policy.generate(prompts, 1, temperature=None, max_new_tokens=20, batch_size=8, seed=0, token_stats=True)


@pytest.mark.slow
def test_f32_engine_is_the_policy_and_follows_each_update(adapted):
    policy, ps = adapted, _prompts(adapted)
    policy.cfg.llamacpp_weights = "f32"
    for round_ in range(2):
        lean, cpp = _greedy(policy, "lean", ps), _greedy(policy, "llamacpp", ps)
        for a, b in zip(lean, cpp):
            assert a[0].ids == b[0].ids, (round_, a[0].text, b[0].text)
            assert np.abs(a[0].stats.logprobs - b[0].stats.logprobs).max() < 1e-4
            assert b[0].sampler_logprobs is None  # exact: nothing to correct
        if round_ == 0:
            first = [g[0].ids for g in cpp]
            with torch.no_grad():  # an in-place update, as the optimiser makes: the adapter must be re-synced
                for n, p in policy.model.named_parameters():
                    if "lora_B" in n:
                        p.mul_(-1.5)
    assert [g[0].ids for g in cpp] != first
    # sampled rows sharing their prompt's KV cells see only their own tokens: the policy scores them alike
    group = policy.generate(ps[:1], 6, temperature=0.8, max_new_tokens=20, batch_size=8, seed=1, token_stats=True)[0]
    assert len({c.ids for c in group}) > 1
    with torch.no_grad():
        logp, _ = policy.token_logprobs(group, temperature=0.8)
    for b, c in enumerate(group):
        assert np.abs(logp[b, :len(c.ids)].numpy() - c.stats.logprobs).max() < 1e-4


@pytest.mark.slow
def test_quantized_engine_records_its_own_log_probs_close_to_the_policy(adapted):
    policy, ps = adapted, _prompts(adapted, 2)
    policy.cfg.decoder, policy.cfg.llamacpp_weights = "llamacpp", "q8_0"
    groups = policy.generate(ps, 4, temperature=0.8, max_new_tokens=16, batch_size=8, seed=3)
    again = policy.generate(ps, 4, temperature=0.8, max_new_tokens=16, batch_size=8, seed=3)
    assert [c.ids for g in groups for c in g] == [c.ids for g in again for c in g]  # same seed, same samples
    comps = [c for g in groups for c in g]
    assert all(c.sampler_logprobs is not None and len(c.sampler_logprobs) == len(c.ids) for c in comps)
    with torch.no_grad():
        logp, mask = policy.token_logprobs(comps, temperature=0.8)
    own = torch.zeros_like(logp)
    for b, c in enumerate(comps):
        own[b, :len(c.ids)] = torch.as_tensor(c.sampler_logprobs)
    gap = ((own - logp).abs() * mask).sum() / mask.sum()
    assert 0 < gap < 0.05, gap  # a different policy, but a close one


@pytest.mark.slow
def test_trainer_reports_and_corrects_the_rollout_mismatch(adapted):
    from ttrl.config import GRPOConfig, SamplingConfig
    from ttrl.extractors import get_extractor
    from ttrl.rewards import Reward
    from ttrl.trainer import Trainer

    policy = adapted
    policy.cfg.decoder, policy.cfg.llamacpp_weights = "llamacpp", "q8_0"
    qs = [Query(str(i), f"Calculate {i + 4} + {7 * i + 5}.") for i in range(2)]
    trainer = Trainer(policy, get_extractor("number"), Reward("random"),
                      SamplingConfig(n_votes=4, n_train=4, temperature=1.0, max_new_tokens=16, batch_size=8),
                      GRPOConfig(lr=1e-4), instruction="Give the final answer as a single number.", seed=0)
    stats = trainer.step(qs).stats
    assert stats.groups_trained > 0
    assert 0 < abs(stats.update.rollout_kl) < 0.05
    assert 0.5 < stats.update.tis_weight <= 2.0
    runner = policy._engines["llamacpp"]._runners["q8_0"]
    policy.close()  # run() frees the engines when it ends
    assert runner.model is None and runner.ctx is None and not policy._engines
