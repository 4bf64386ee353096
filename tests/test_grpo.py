"""GRPO advantages and loss against small hand-worked examples."""
import math

import pytest
import torch

from ttrl.grpo import aggregate, batch_advantages, group_advantages, grpo_token_loss, k3_kl


def test_advantages_normalised_within_group():
    # r = [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3) -> A = +-0.5 * sqrt(3)
    a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), eps=0.0)
    assert a.tolist() == pytest.approx([0.866025, -0.866025, -0.866025, 0.866025], rel=1e-5)
    # r = [2, 0, 0, 0]: mean 0.5, squares 2.25 + 3 * 0.25 = 3, unbiased std sqrt(3 / 3) = 1
    a = group_advantages(torch.tensor([2.0, 0.0, 0.0, 0.0]), eps=0.0)
    assert a.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], rel=1e-5)
    # population std (n): [1, 0, 0, 1] -> std 0.5 -> A = [1, -1, -1, 1]
    a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), eps=0.0, unbiased_std=False)
    assert a.tolist() == [1.0, -1.0, -1.0, 1.0]


def test_advantages_unscaled_dr_grpo():
    a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), scale=False)
    assert a.tolist() == [0.5, -0.5, -0.5, 0.5]


def test_batch_baseline_trains_unanimous_groups():
    # groups [1, 1] and [1, 0]: batch mean 0.75, unbiased std sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5
    a = batch_advantages([torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])], eps=0.0)
    assert [t.tolist() for t in a] == [pytest.approx([0.5, 0.5]), pytest.approx([0.5, -1.5])]
    # the unanimous group gets nothing from GRPO's per-group baseline
    assert group_advantages(torch.tensor([1.0, 1.0])) is None
    # unscaled: r - 0.75; population std (n): sqrt(0.1875) = 0.4330
    a = batch_advantages([torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])], scale=False)
    assert a[1].tolist() == [0.25, -0.75]
    a = batch_advantages([torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])], eps=0.0, unbiased_std=False)
    assert a[1].tolist() == pytest.approx([0.57735, -1.73205], rel=1e-5)
    # a whole batch of equal rewards carries no signal
    assert batch_advantages([torch.tensor([1.0, 1.0]), torch.tensor([1.0])]) == [None, None]
    assert batch_advantages([]) == []


def test_equal_rewards_carry_no_signal():
    assert group_advantages(torch.tensor([1.0, 1.0, 1.0])) is None
    assert group_advantages(torch.tensor([0.3])) is None


def test_k3_kl_hand_value():
    # pi = 0.5, ref = 0.25: d = ln 0.5 -> e^d - d - 1 = 0.5 + 0.693147 - 1 = 0.193147
    kl = k3_kl(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert kl.item() == pytest.approx(0.193147, abs=1e-6)
    assert k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0.0


def test_on_policy_loss_and_gradient():
    # ratio = 1: loss per token = -A, d loss / d logp = -A
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, kl, ratio = grpo_token_loss(logp, logp.detach(), torch.tensor([2.0]))
    assert loss.tolist() == [[-2.0, -2.0]]
    loss.sum().backward()
    assert logp.grad.tolist() == [[-2.0, -2.0]]
    assert kl is None and ratio.tolist() == [[1.0, 1.0]]


def test_clipping():
    old = torch.zeros(1, 1)
    # ratio 1.5 with A = +1: min(1.5, 1.2) = 1.2 -> clipped, no gradient
    logp = torch.full((1, 1), math.log(1.5), requires_grad=True)
    loss, _, _ = grpo_token_loss(logp, old, torch.tensor([1.0]), clip_eps=0.2)
    assert loss.item() == pytest.approx(-1.2)
    loss.sum().backward()
    assert logp.grad.item() == 0.0
    # ratio 1.5 with A = -1: min(-1.5, -1.2) = -1.5 -> unclipped, gradient flows
    logp = torch.full((1, 1), math.log(1.5), requires_grad=True)
    loss, _, _ = grpo_token_loss(logp, old, torch.tensor([-1.0]), clip_eps=0.2)
    assert loss.item() == pytest.approx(1.5)
    loss.sum().backward()
    assert logp.grad.item() == pytest.approx(1.5)


def test_kl_term_added_with_coefficient():
    logp = torch.tensor([[math.log(0.5)]])
    loss, kl, _ = grpo_token_loss(logp, logp, torch.tensor([0.0]), torch.tensor([[math.log(0.25)]]), kl_coef=0.1)
    assert loss.item() == pytest.approx(0.1 * 0.193147, abs=1e-6)


def test_aggregation_hand_values_and_micro_batches_add_up():
    tok = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # token_mean: (1 + 2 + 3) / 3 = 2; seq_mean: ((1 + 2) / 2 + 3) / 2 = 2.25
    assert aggregate(tok, mask, "token_mean", 3.0, 2).item() == pytest.approx(2.0)
    assert aggregate(tok, mask, "seq_mean", 3.0, 2).item() == pytest.approx(2.25)
    for agg in ("token_mean", "seq_mean"):
        whole = aggregate(tok, mask, agg, 3.0, 2)
        parts = aggregate(tok[:1], mask[:1], agg, 3.0, 2) + aggregate(tok[1:], mask[1:], agg, 3.0, 2)
        assert parts.item() == pytest.approx(whole.item())
    with pytest.raises(ValueError):
        aggregate(tok, mask, "sum", 3.0, 2)


def test_truncated_importance_weights_scale_the_policy_gradient_term_only():
    from ttrl.grpo import tis_weights

    # policy 0.5 vs sampler 0.25 -> ratio 2, truncated at 1.5; policy 0.2 vs sampler 0.4 -> 0.5 (not truncated)
    old = torch.tensor([[math.log(0.5), math.log(0.2)]])
    sampler = torch.tensor([[math.log(0.25), math.log(0.4)]])
    w = tis_weights(old, sampler, cap=1.5)
    assert w[0].tolist() == pytest.approx([1.5, 0.5], rel=1e-6)
    logp = old.clone().requires_grad_(True)
    ref = old - 1.0
    loss, kl, _ = grpo_token_loss(logp, logp.detach(), torch.tensor([2.0]), ref, kl_coef=0.1, is_weight=w)
    k = k3_kl(old, ref)
    # on-policy surrogate is ratio * A = A per token; the weight multiplies it, the KL term is untouched
    assert loss.detach()[0].tolist() == pytest.approx([-3.0 + 0.1 * k[0, 0].item(), -1.0 + 0.1 * k[0, 1].item()], rel=1e-6)
    loss.sum().backward()
    plain = old.clone().requires_grad_(True)
    grpo_token_loss(plain, plain.detach(), torch.tensor([2.0]), ref, kl_coef=0.1)[0].sum().backward()
    kl_grad = plain.grad + 2.0  # d/dlogp of the unweighted loss is -A + 0.1 dKL
    assert logp.grad[0].tolist() == pytest.approx((kl_grad - 2.0 * w)[0].tolist(), rel=1e-5)
