"""Time one adaptation step on the default model, split into sampling, reward, and
forward/backward/optimizer, and compare it with the model-compute floor measured in the same run
(the same generate and forward/backward/optimizer calls, timed alone).

    python bench/step_time.py [--steps 3] [--prompts 4] [--n 8]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ttrl.config import Config
from ttrl.extractors import get_extractor
from ttrl.rewards import Reward
from ttrl.seeds import derive
from ttrl.tasks import load_dataset
from ttrl.trainer import Trainer


def floor_update(policy, optimizer, comps, temperature, micro_batch, kl):
    """The bare model work of an update: (reference pass), forward, backward, clip, AdamW step.
    The optimizer has lr 0, so the floor measurement does the same work without moving the weights."""
    params = policy.trainable_parameters()
    optimizer.zero_grad(set_to_none=True)
    for i in range(0, len(comps), micro_batch):
        chunk = comps[i:i + micro_batch]
        if kl:
            policy.token_logprobs(chunk, temperature=temperature, reference=True)
        logp, mask = policy.token_logprobs(chunk, temperature=temperature)
        (-(logp * mask).sum() / mask.sum()).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args()

    from ttrl.backends.causal import CausalBackend

    cfg = Config()
    cfg.model.gradient_checkpointing = args.gradient_checkpointing
    cfg.grpo.prompts_per_step, cfg.sampling.n_votes, cfg.sampling.n_train = args.prompts, args.n, args.n
    data = load_dataset(cfg.data.data, cfg.data.task_args, 64, 0)
    extractor = get_extractor("number")
    policy = CausalBackend(cfg.model, need_reference=cfg.grpo.kl_coef > 0)
    trainer = Trainer(policy, extractor, Reward(cfg.reward.reward), cfg.sampling, cfg.grpo, extractor.instruction, 0)
    s = cfg.sampling
    still = torch.optim.AdamW(policy.trainable_parameters(), lr=0.0)
    rows = []
    for k in range(args.steps + 1):  # step 0 warms up
        queries = [it.query for it in data.items[k * args.prompts:(k + 1) * args.prompts]]
        st = trainer.step(queries).stats
        # the floor, same step index and seed: generate + bare update on the same number of sequences
        prompts = [policy.render(q, trainer.instruction) for q in queries]
        t0 = time.perf_counter()
        groups = policy.generate(prompts, s.n_votes, temperature=s.temperature, top_p=s.top_p,
                                 max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
                                 seed=derive(trainer.seed, "rollout", trainer.steps - 1))
        t1 = time.perf_counter()
        trained_groups = groups[: int(st.groups_trained)]  # the step skips groups with equal rewards
        floor_update(policy, still, [c for g in trained_groups for c in g], s.temperature, cfg.grpo.micro_batch,
                     cfg.grpo.kl_coef > 0)
        t2 = time.perf_counter()
        if k:
            rows.append((st.seconds, st.seconds_sample, st.seconds_reward, st.seconds_update,
                         t1 - t0, t2 - t1, st.groups_trained))
    r = np.array(rows).mean(0)
    step, samp, rew, upd, fgen, fupd, trained = r
    floor = fgen + fupd
    print(f"default model, {args.prompts} prompts x {args.n} samples, {s.max_new_tokens} new tokens, "
          f"mean of {args.steps} steps (groups trained per step: {trained:.1f})")
    print(f"  step total        {step:7.2f} s")
    print(f"    sampling        {samp:7.2f} s  ({samp / step:5.1%})")
    print(f"    reward          {rew:7.3f} s  ({rew / step:5.1%})")
    print(f"    fwd/bwd/optim   {upd:7.2f} s  ({upd / step:5.1%})")
    print(f"  compute floor     {floor:7.2f} s  (generate {fgen:.2f} + update {fupd:.2f}, timed alone)")
    print(f"  step / floor      {step / floor:7.3f}x")
    print(f"  share of step time outside model compute: {max(0.0, 1 - floor / step):.1%}")


if __name__ == "__main__":
    main()
