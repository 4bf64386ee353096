"""The Hugging Face causal-LM backend on the real SmolLM2 model."""
import pytest
import torch

from ttrl.data import Query

pytestmark = pytest.mark.slow


def prompts(policy, n=3):
    return [policy.render(Query(str(i), f"Calculate {i} + {2 * i + 1}."), "Give the final answer as a single number.")
            for i in range(n)]


def test_render_uses_chat_template_and_lettered_choices(policy):
    text = policy.render(Query("q", "Which colour?", ("red", "blue")), "Answer with the letter.").text
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert "Which colour?\nA. red\nB. blue\nAnswer with the letter." in text


def test_generate_is_seeded_and_grouped(policy):
    ps = prompts(policy)
    a = policy.generate(ps, 4, temperature=1.0, max_new_tokens=12, batch_size=8, seed=5)
    b = policy.generate(ps, 4, temperature=1.0, max_new_tokens=12, batch_size=8, seed=5)
    assert [[c.ids for c in g] for g in a] == [[c.ids for c in g] for g in b]
    assert len(a) == 3 and all(len(g) == 4 for g in a)
    assert len({c.prompt_ids for c in a[1]}) == 1 and a[0][0].prompt_ids != a[1][0].prompt_ids
    for g in a:
        for c in g:
            assert len(c.ids) <= 12
            assert c.finished == (c.ids[-1] in policy.eos_ids)
            assert policy.eos_ids.isdisjoint(c.ids[:-1])


def test_batched_logprobs_match_single_and_ignore_padding(policy):
    ps = prompts(policy)
    comps = [g[0] for g in policy.generate(ps, 1, temperature=1.0, max_new_tokens=10, batch_size=8, seed=1)]
    with torch.no_grad():
        batched, mask = policy.token_logprobs(comps, temperature=1.0)
        for b, c in enumerate(comps):
            single, m1 = policy.token_logprobs([c], temperature=1.0)
            n = len(c.ids)
            assert mask[b].sum().item() == n and m1.sum().item() == n
            assert torch.allclose(batched[b, :n], single[0, :n], atol=2e-2), (batched[b, :n], single[0, :n])
            assert (batched[b, n:] == 0).all()
        assert (batched <= 0).all()


def test_reference_is_the_adapter_switched_off(policy):
    comps = [g[0] for g in policy.generate(prompts(policy, 2), 1, temperature=1.0, max_new_tokens=8, batch_size=8, seed=2)]
    lora_b = [p for n, p in policy.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.requires_grad for p in lora_b)
    with torch.no_grad():
        saved = [p.clone() for p in lora_b]
        try:
            cur, _ = policy.token_logprobs(comps, temperature=1.0)
            ref, _ = policy.token_logprobs(comps, temperature=1.0, reference=True)
            assert torch.allclose(cur, ref, atol=1e-5)  # fresh LoRA (B = 0) is the base model
            for p in lora_b:
                p.add_(0.01 * torch.randn_like(p))
            moved, _ = policy.token_logprobs(comps, temperature=1.0)
            ref2, _ = policy.token_logprobs(comps, temperature=1.0, reference=True)
            assert torch.allclose(ref, ref2, atol=1e-5) and not torch.allclose(moved, ref, atol=1e-3)
        finally:
            for p, s in zip(lora_b, saved):
                p.copy_(s)
    # the reference is not a second model copy
    assert policy._ref_model is None


def test_adapter_init_follows_the_seed_not_the_global_generator():
    """The flaky-test cause of session 4: lora_A came from whatever the global generator held."""
    from ttrl.backends.causal import CausalBackend
    from ttrl.config import ModelConfig

    def lora_a(seed, global_seed):
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        p = CausalBackend(ModelConfig(), need_reference=False, seed=seed)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is neither read nor moved
        return [t.detach() for n, t in p.model.named_parameters() if "lora_A" in n]

    first = lora_a(0, 123)
    assert all(torch.equal(a, b) for a, b in zip(first, lora_a(0, 7)))
    assert not any(torch.equal(a, b) for a, b in zip(first, lora_a(1, 123)))


def test_gradient_checkpointing_replays_the_layers_and_keeps_the_gradients():
    from ttrl.backends.causal import CausalBackend
    from ttrl.config import ModelConfig
    from ttrl.rollout import Completion

    policy = CausalBackend(ModelConfig(gradient_checkpointing=True), need_reference=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-zero adapter, so every LoRA weight gets a gradient
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=gen)
    ids = [tuple(policy.tokenizer(p.text, add_special_tokens=False).input_ids) for p in prompts(policy, 2)]
    comps = [Completion(pid, tuple(torch.randint(0, 49152, (12 - 4 * j,), generator=gen).tolist()), "", False)
             for pid in ids for j in range(2)]
    calls, mlp = [], policy.model.get_base_model().model.layers[3].mlp
    forward = mlp.forward  # counted by wrapping: torch runs no module hooks when it replays a checkpoint

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    mlp.forward = counted

    def grads(share, checkpointing):
        policy.cfg.share_prompt, policy.cfg.gradient_checkpointing = share, checkpointing
        calls.clear()
        for p in policy.trainable_parameters():
            p.grad = None
        logp, _ = policy.token_logprobs(comps, temperature=0.7)
        logp.sum().backward()
        return torch.cat([p.grad.flatten() for p in policy.trainable_parameters()]), len(calls)

    ref, n_ref = grads(True, False)
    assert n_ref == 2  # the shared prompt pass, then the completions
    g, n = grads(True, True)
    assert n == 3 and torch.equal(g, ref)  # the completion pass replayed in backward; the prompt pass kept
    g, n = grads(False, True)
    assert n == 2 and torch.allclose(g, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert not any(m.training for m in policy.model.modules())  # no dropout switched on along the way


def test_checkpointing_refuses_models_with_dropout():
    """Replay flips decoder layers to training mode, and some layers read dropout from their own flag."""
    from ttrl.backends.scoring import _dropouts

    cfg = {"attention_dropout": 0.0, "id2label": {0: "a"}, "use_dropout": True,
           "text_config": {"hidden_dropout_prob": 0.1, "layerdrop": 0.05}}
    assert _dropouts(cfg) == {"hidden_dropout_prob": 0.1, "layerdrop": 0.05}


def test_full_finetune_step_moves_weights_and_keeps_a_frozen_reference():
    from ttrl.backends.causal import CausalBackend
    from ttrl.config import GRPOConfig, ModelConfig, SamplingConfig
    from ttrl.extractors import get_extractor
    from ttrl.rewards import Reward
    from ttrl.trainer import Trainer

    policy = CausalBackend(ModelConfig(finetune="full"), need_reference=True)
    assert policy._ref_model is not None and not any(p.requires_grad for p in policy._ref_model.parameters())
    assert len(policy.trainable_parameters()) == len(list(policy.model.parameters()))
    before = policy.model.model.norm.weight.detach().clone()
    trainer = Trainer(policy, get_extractor("text"), Reward("random"),
                      SamplingConfig(n_votes=4, n_train=4, temperature=1.0, max_new_tokens=8, batch_size=8),
                      GRPOConfig(lr=1e-4, kl_coef=0.01, micro_batch=4), instruction="", seed=0)
    stats = trainer.step([Query("a", "Say something."), Query("b", "Name a colour.")]).stats
    assert stats.groups_trained >= 1
    assert not torch.equal(before, policy.model.model.norm.weight)
    assert torch.equal(before, policy._ref_model.model.norm.weight)


def test_sampling_merge_is_exact_and_matches_unmerged(policy):
    """Merged sampling gives the adapter's distribution and leaves the base weights bit-identical."""
    lora_b = [p for n, p in policy.model.named_parameters() if "lora_B" in n]
    base_w = [p for n, p in policy.model.named_parameters() if "base_layer.weight" in n]
    before = [w.detach().clone() for w in base_w]
    ps = prompts(policy, 2)
    with torch.no_grad():
        saved = [p.clone() for p in lora_b]
        gen = torch.Generator().manual_seed(0)  # a fixed perturbation: greedy ties must not depend on the run
        try:
            for p in lora_b:
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
            greedy_merged = policy.generate(ps, 1, temperature=None, max_new_tokens=12, batch_size=8, seed=0)
            policy.cfg.merge_for_sampling = False
            greedy_plain = policy.generate(ps, 1, temperature=None, max_new_tokens=12, batch_size=8, seed=0)
        finally:
            policy.cfg.merge_for_sampling = True
            for p, s in zip(lora_b, saved):
                p.copy_(s)
    assert [g[0].ids for g in greedy_merged] == [g[0].ids for g in greedy_plain]
    assert all(torch.equal(a, b) for a, b in zip(before, base_w))
    assert not any(m.merged for m in policy.model.modules() if hasattr(m, "merged_adapters"))
