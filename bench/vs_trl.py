"""Seconds per GRPO step: ttrl's Trainer against TRL's GRPOTrainer, back to back in one process, on the
same model, prompts, group size, token budget, temperature, KL, learning rate and LoRA adapter, with the
same label-free reward (ttrl's majority vote, handed to TRL through ttrl.integrations.trl).

    python bench/vs_trl.py [--steps 3] [--prompts 4] [--n 8] [--max-new-tokens 48]

The first step of each is a warm-up and is not timed. Prints both means and the ratio.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import numpy as np
import torch


def ttrl_steps(cfg, queries_per_step, steps):
    from ttrl.backends.causal import CausalBackend
    from ttrl.extractors import get_extractor
    from ttrl.rewards import Reward
    from ttrl.trainer import Trainer

    torch.manual_seed(0)
    policy = CausalBackend(cfg.model, need_reference=cfg.grpo.kl_coef > 0)
    ext = get_extractor("number")
    trainer = Trainer(policy, ext, Reward("majority"), cfg.sampling, cfg.grpo, ext.instruction, seed=0)
    times, tokens = [], []
    for k in range(steps + 1):
        t0 = time.perf_counter()
        st = trainer.step(queries_per_step[k]).stats
        if k:
            times.append(time.perf_counter() - t0)
            tokens.append(st.tokens)
    return times, tokens, [policy.render(q, ext.instruction).text for qs in queries_per_step for q in qs]


def trl_steps(cfg, prompts, args, steps):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ttrl.integrations.trl import trl_reward
    from ttrl.zoo import resolve_model

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_end(self, a, state, control, **kw):
            self.marks.append(time.perf_counter())

    torch.manual_seed(0)
    path = resolve_model(cfg.model.model)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    m, s, g = cfg.model, cfg.sampling, cfg.grpo
    lora = LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as out:
        targs = GRPOConfig(
            output_dir=out, per_device_train_batch_size=args.prompts * args.n, num_generations=args.n,
            max_completion_length=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, top_k=0, beta=g.kl_coef,
            learning_rate=g.lr, loss_type="dapo", scale_rewards="group", max_steps=steps + 1, logging_steps=1,
            report_to="none", use_cpu=True, bf16=False, save_strategy="no", seed=0, shuffle_dataset=False,
            disable_dropout=True, max_grad_norm=g.max_grad_norm, gradient_accumulation_steps=1)
        clock = Clock()
        trainer = GRPOTrainer(model=model, reward_funcs=trl_reward("majority", "number"), args=targs,
                              train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                              peft_config=lora, callbacks=[clock])
        t0 = time.perf_counter()
        trainer.train()
        marks = [t0] + clock.marks
    return list(np.diff(marks)[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--skip-before", action="store_true", help="skip the session-1 ttrl paths row")
    args = ap.parse_args()

    from ttrl.config import Config
    from ttrl.tasks import load_dataset

    cfg = Config()
    cfg.grpo.prompts_per_step, cfg.sampling.n_votes, cfg.sampling.n_train = args.prompts, args.n, args.n
    cfg.sampling.max_new_tokens = args.max_new_tokens
    cfg.sampling.batch_size = args.prompts * args.n
    cfg.grpo.micro_batch = args.prompts * args.n  # one forward/backward per step, as TRL does here
    data = load_dataset(cfg.data.data, cfg.data.task_args, args.prompts * (args.steps + 1), 0)
    queries = [[it.query for it in data.items[k * args.prompts:(k + 1) * args.prompts]] for k in range(args.steps + 1)]

    ours, tokens, prompts = ttrl_steps(cfg, queries, args.steps)
    before = None
    if not args.skip_before:  # ttrl's first sampler and scorer: HF generate, full-sequence scoring, bf16 autocast
        old = copy.deepcopy(cfg)
        old.model.decoder, old.model.share_prompt, old.model.autocast = "hf", False, "bfloat16"
        old.grpo.micro_batch = 16
        before = float(np.mean(ttrl_steps(old, queries, args.steps)[0]))
    theirs = trl_steps(cfg, prompts, args, args.steps)  # the same rendered prompts, in the same order
    a, b = float(np.mean(ours)), float(np.mean(theirs))
    print(f"SmolLM2-135M + LoRA r{cfg.model.lora_r}, {args.prompts} prompts x {args.n} samples, "
          f"{args.max_new_tokens} new tokens, T {cfg.sampling.temperature}, KL {cfg.grpo.kl_coef}; "
          f"mean of {args.steps} steps after one warm-up, torch threads {torch.get_num_threads()}")
    print(f"  ttrl Trainer        {a:7.2f} s/step   ({np.mean(tokens):.0f} sampled tokens/step)")
    if before is not None:
        print(f"  ttrl, session-1 paths {before:5.2f} s/step   (HF generate, full-sequence scoring, bf16 autocast)")
    print(f"  TRL GRPOTrainer     {b:7.2f} s/step")
    print(f"  TRL / ttrl          {b / a:7.2f}x")


if __name__ == "__main__":
    main()
