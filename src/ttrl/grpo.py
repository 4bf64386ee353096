"""GRPO as pure tensor functions: group-normalised advantages and the clipped, KL-regularised loss.

References: Shao et al. 2024 (GRPO), Schulman et al. 2017 (clipped surrogate), Schulman 2020 (k3 KL
estimator), Liu et al. 2025 (Dr. GRPO: no std scaling), Hu et al. 2025 (REINFORCE++: a baseline over the
whole batch instead of each group), Yao et al. 2025 (truncated importance sampling
for rollout engines that are not exactly the policy).
"""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, scale: bool = True,
                     unbiased_std: bool = True) -> torch.Tensor | None:
    """A_i = (r_i - mean r) / (std r + eps) within one group; None when all rewards are equal
    (the group carries no signal and is skipped). std is the unbiased (n - 1) std by default, as in
    TRL's GRPOTrainer and verl's GRPO advantage; unbiased_std=False gives the population std."""
    rewards = rewards.float()
    if rewards.numel() < 2 or torch.all(rewards == rewards[0]):
        return None
    centred = rewards - rewards.mean()
    return centred / (rewards.std(unbiased=unbiased_std) + eps) if scale else centred


def batch_advantages(groups: list[torch.Tensor], eps: float = 1e-6, scale: bool = True,
                     unbiased_std: bool = True) -> list[torch.Tensor | None]:
    """REINFORCE++'s global baseline: A_i = (r_i - mean r) / (std r + eps) over every group's rewards at once, split
    back per group. Unlike group_advantages, a unanimous group keeps a signal (its samples sit above or below the
    batch's mean), so confident items are trained on too; all None when the whole batch is equal."""
    if not groups:
        return []
    flat = torch.cat([r.float() for r in groups])
    if flat.numel() < 2 or torch.all(flat == flat[0]):
        return [None] * len(groups)
    centred = flat - flat.mean()
    adv = centred / (flat.std(unbiased=unbiased_std) + eps) if scale else centred
    return list(torch.split(adv, [r.numel() for r in groups]))


KL_LOG_RATIO_CLAMP = 20.0  # verl's low_var_kl clamps log(ref / pi) to +-20 before exp ...
KL_CLAMP = 10.0  # ... and the per-token estimate to <= 10, so a drifted token cannot overflow the loss


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased), with verl's
    guards: the log-ratio clamped to [-20, 20] and the estimate to [0, 10] (finite values and gradients
    however far the policy drifts)."""
    d = (ref_logp - logp).clamp(-KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
    return (torch.exp(d) - d - 1).clamp(max=KL_CLAMP)


def tis_weights(old_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """min(pi_old / pi_sampler, cap) per token (Yao et al. 2025): tokens drawn by a rollout engine that is not
    exactly the policy (quantized weights, vLLM) reweighted towards the policy, truncated for variance."""
    return torch.exp(old_logp - sampler_logp).clamp(max=cap).detach()


def grpo_token_loss(logp, old_logp, adv, ref_logp=None, *, clip_eps: float = 0.2, kl_coef: float = 0.0,
                    is_weight=None):
    """Per-token loss -w min(rho A, clip(rho) A) + beta KL; logp/old/ref/w [B, T], adv [B].
    is_weight w: importance weights for tokens sampled off the policy (tis_weights); None = 1."""
    ratio = torch.exp(logp - old_logp)
    a = adv.unsqueeze(-1)
    surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    loss = -surrogate if is_weight is None else -is_weight * surrogate
    kl = None
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)
        loss = loss + kl_coef * kl
    return loss, kl, ratio


def aggregate(token_loss: torch.Tensor, mask: torch.Tensor, agg: str, total_tokens: float, total_seqs: int):
    """Sum of this micro-batch's share of the step loss, so micro-batches add up to the full-batch loss.

    token_mean: every trained token of the step weighs the same (VERL/DAPO);
    seq_mean: each sequence's token mean, averaged over sequences (GRPO paper)."""
    if agg == "token_mean":
        return (token_loss * mask).sum() / total_tokens
    if agg == "seq_mean":
        per_seq = (token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_seq.sum() / total_seqs
    raise ValueError(f"loss_agg must be token_mean or seq_mean, got {agg!r}")
