"""The RL math checked against hand computations (issue 13): unparsable answers in agreement rewards, the
advantage std, certainty statistics at the sampling temperature, the KL guard, label-free answer types,
the generate fallback's distribution, reward state in checkpoints and LoRA dropout in the update."""
import math

import numpy as np
import pytest
import torch

from ttrl.config import Config, ConfigError, ModelConfig
from ttrl.data import Dataset, Item, Query
from ttrl.engines.base import token_stats
from ttrl.grpo import group_advantages, k3_kl
from ttrl.rewards import Group, Reward, RewardContext
from ttrl.session import resolve_answer_type

AGREEMENT = ["majority", "frequency", "entropy", "ttrv", "ttrv+0.0*entropy"]


def _rewards(spec, classes, **params):
    from ttrl.rewards.base import build_params

    answers = tuple(None if c is None else str(c) for c in classes)
    group = Group(Query("q", "p"), tuple(a or "" for a in answers), answers, tuple(classes))
    return Reward(spec, build_params(params))(group, RewardContext(rng=np.random.default_rng(0))).rewards


@pytest.mark.parametrize("classes", [[None] * 6 + [0, 1], [None] * 5 + [0, 0, 1]])
@pytest.mark.parametrize("spec", AGREEMENT)
def test_unparsable_never_outscores_parsed_in_the_issue_cases(spec, classes):
    r = _rewards(spec, classes)
    unparsed = [x for x, c in zip(r, classes) if c is None]
    parsed = [x for x, c in zip(r, classes) if c is not None]
    assert max(unparsed) <= min(parsed) + 1e-12


def test_unparsable_never_outscores_parsed_on_random_groups():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 12))
        classes = [None if rng.random() < 0.5 else int(rng.integers(0, 3)) for _ in range(n)]
        if all(c is None for c in classes) or all(c is not None for c in classes):
            continue
        for spec in AGREEMENT:
            r = _rewards(spec, classes)
            assert max(x for x, c in zip(r, classes) if c is None) <= \
                min(x for x, c in zip(r, classes) if c is not None) + 1e-12, (spec, classes)


def test_ttrv_per_sample_by_hand():
    # classes [None]*5 + [0, 0, 1]: outcomes {0: 2, 1: 1, five singletons}, n = 8, M = 7
    h = -(2 / 8 * math.log(2 / 8) + 6 * (1 / 8) * math.log(1 / 8))
    h_without_0 = math.log(7)  # seven singletons
    h_without_single = -(2 / 7 * math.log(2 / 7) + 5 * (1 / 7) * math.log(1 / 7))
    z = math.log(7)
    r = _rewards("ttrv", [None] * 5 + [0, 0, 1])
    assert r[5] == pytest.approx(2 / 8 + 0.75 * (h_without_0 - h) / z)
    assert r[7] == pytest.approx(1 / 8 + 0.75 * (h_without_single - h) / z)
    assert r[0] == pytest.approx(0 + 0.75 * (h_without_single - h) / z)


def test_group_advantages_use_the_unbiased_std_by_default():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])  # mean 0.25; sum of squares 0.75
    unbiased, population = math.sqrt(0.75 / 3), math.sqrt(0.75 / 4)
    assert group_advantages(r, eps=0.0)[0].item() == pytest.approx(0.75 / unbiased)
    assert group_advantages(r, eps=0.0, unbiased_std=False)[0].item() == pytest.approx(0.75 / population)
    assert r.std().item() == pytest.approx(np.std([1, 0, 0, 0], ddof=1))  # torch.std, as TRL and verl call it


def test_token_stats_come_from_the_sampled_distribution():
    logits = torch.tensor([[2.0, 1.0, -1.0, 0.5]])
    T = 0.7
    p = np.exp(np.array([2.0, 1.0, -1.0, 0.5]) / T)
    p /= p.sum()
    chosen, entropy, certainty = token_stats(logits, torch.tensor([1]), T)
    assert chosen.item() == pytest.approx(math.log(p[1]), rel=1e-6)
    assert entropy.item() == pytest.approx(-(p * np.log(p)).sum(), rel=1e-6)
    assert certainty.item() == pytest.approx(-np.log(p).mean() - math.log(4), rel=1e-6)
    raw = token_stats(logits, torch.tensor([1]))  # greedy: T = 1
    assert raw[0].item() == pytest.approx(float(torch.log_softmax(logits, -1)[0, 1]))


def test_k3_kl_is_finite_and_bounded_for_a_large_log_ratio():
    logp = torch.tensor([0.0, -300.0, -1.0], requires_grad=True)
    ref = torch.tensor([-300.0, 0.0, -1.0])
    kl = k3_kl(logp, ref)
    assert torch.isfinite(kl).all() and (kl <= 10).all() and (kl >= 0).all()
    assert kl[2].item() == 0.0
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all()
    small = torch.tensor([-0.3]), torch.tensor([-0.1])  # unclamped region: exp(d) - d - 1
    assert k3_kl(*small).item() == pytest.approx(math.exp(0.2) - 0.2 - 1, rel=1e-5)  # float32


def _dataset(answers, choices=None, declared=None):
    items = [Item(Query(f"q{i}", f"prompt {i}", choices), a) for i, a in enumerate(answers)]
    return Dataset("d", items, answer_type=declared)


def test_answer_type_never_reads_labels():
    cfg = Config()
    cfg.data.data = "my.jsonl"
    for labels in (["1", "2"], ["\\frac{1}{2}", "x"], ["red", "blue"], [None, None]):
        with pytest.raises(ConfigError, match="--answer-type"):
            resolve_answer_type(cfg, _dataset(labels))  # no choices, nothing declared: the user must say
        assert resolve_answer_type(cfg, _dataset(labels, choices=("a", "b"))) == "choice"
        assert resolve_answer_type(cfg, _dataset(labels, declared="math")) == "math"
    cfg.data.answer_type = "number"
    assert resolve_answer_type(cfg, _dataset(["red"])) == "number"


def test_builtin_tasks_declare_their_answer_format():
    from ttrl.tasks import load_dataset

    cfg = Config()
    ds = load_dataset("rg:basic_arithmetic", cfg.data.task_args, 4, 0)
    assert ds.answer_type == "number"
    assert load_dataset("rg:word_sorting", {}, 2, 0).answer_type is None
    assert load_dataset("speech:test", {}, 2, 0).answer_type == "transcript"


@pytest.mark.slow
def test_hf_generate_fallback_ignores_the_models_generation_config(policy):
    """A checkpoint's generation_config (suppressed tokens, repetition penalty, min_p) must not shape what the
    `hf` engine samples: the samples must come from the distribution token_logprobs scores."""
    from ttrl.rollout import Prompt

    prompt = Prompt(policy.render(Query("q", "Calculate 3 + 4."), "Give the final answer as a single number.").text)
    enc = policy.encode([prompt])
    with torch.no_grad():
        first = int(policy.model(**enc).logits[0, -1].argmax())
    base = policy.model.get_base_model()
    saved = base.generation_config
    gc = saved.__class__.from_dict(saved.to_dict())
    gc.suppress_tokens, gc.repetition_penalty, gc.min_p, gc.min_new_tokens = [first], 5.0, 0.9, 30
    base.generation_config, decoder = gc, policy.cfg.decoder
    policy.cfg.decoder = "hf"
    try:
        (greedy,), = policy.generate([prompt], 1, temperature=None, max_new_tokens=4, batch_size=1, seed=0)
        (cold,), = policy.generate([prompt], 1, temperature=1e-4, max_new_tokens=4, batch_size=1, seed=0)
    finally:
        base.generation_config, policy.cfg.decoder = saved, decoder
    assert greedy.ids[0] == first and cold.ids[0] == first
    assert policy.model.get_base_model().generation_config is saved


@pytest.mark.slow
def test_lora_dropout_acts_in_the_update_pass_only():
    from ttrl.backends.causal import CausalBackend
    from ttrl.rollout import Completion

    pol = CausalBackend(ModelConfig(lora_dropout=0.5, lora_r=4), need_reference=True, seed=0)
    with torch.no_grad():  # a non-zero adapter, so that dropping its input changes the output
        for n, p in pol.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    enc = pol.encode([pol.render(Query("q", "Calculate 3 + 4."), "")])
    comp = Completion(tuple(enc["input_ids"][0].tolist()), (22, 23, 24), "", False)
    a, _ = pol.token_logprobs([comp], temperature=1.0)
    b, _ = pol.token_logprobs([comp], temperature=1.0)
    assert not torch.allclose(a, b)  # dropout masks differ between two gradient passes
    with torch.no_grad():
        c, _ = pol.token_logprobs([comp], temperature=1.0)
        d, _ = pol.token_logprobs([comp], temperature=1.0)
    assert torch.equal(c, d)  # no dropout without gradients (old log-probs, evaluation)
    ref1, _ = pol.token_logprobs([comp], temperature=1.0, reference=True)
    ref2, _ = pol.token_logprobs([comp], temperature=1.0, reference=True)
    assert torch.equal(ref1, ref2)
    assert not any(m.training for m in pol.model.modules())  # back to eval mode everywhere


@pytest.mark.slow
def test_recorded_token_stats_equal_the_scored_log_probs(policy):
    """The sampler's recorded log-probs are those of softmax(z / T), the distribution the update scores."""
    prompt = policy.render(Query("q", "Calculate 12 + 5."), "Give the final answer as a single number.")
    (group,) = policy.generate([prompt], 2, temperature=0.7, max_new_tokens=8, batch_size=2, seed=3, token_stats=True)
    with torch.no_grad():
        logp, mask = policy.token_logprobs(group, temperature=0.7)
    for row, comp in zip(logp, group):
        assert np.allclose(row[:len(comp.ids)].numpy(), comp.stats.logprobs, atol=1e-4)
