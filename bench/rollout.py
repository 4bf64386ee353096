"""Rollout throughput: N samples of one prompt (and of several prompts at once) on the default model with a
LoRA adapter, by each sampling path, measured side by side in one run.

    python bench/rollout.py [--n 8 32] [--prompts 1 4] [--max-new-tokens 48] [--repeats 4]

Paths:
  hf-plain    transformers generate on the peft model, prompt repeated N times (what TRL does); with several
              prompts, one call for all of them
  hf-1by1     the same, one generate call per prompt: plain HF generate for N samples of one prompt, which is
              the issue-6 baseline; the last columns compare each path on the whole P x N workload against it
  hf-merged   the same with the LoRA merged into transient weight copies (ttrl's session-1 sampler)
  lean        ttrl's decode loop: shared prefill, preallocated KV cache, finished rows leave the batch
  llamacpp    llama.cpp sequences sharing the prompt's KV cells, F32 weights + the LoRA adapter (when
              llama-cpp-python is installed); the adapter sync a training step adds is timed separately
  llamacpp-q8 the same on Q8_0 weights (a close but different policy: the update reweights its tokens)
Throughput counts real sampled tokens (up to and including EOS), summed over the repeats, each on different
prompts and a different seed (one group's time depends on how long its samples turn out, so a single group is
noisy); ratios are against hf-plain, then against hf-1by1 (the same for one prompt).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

PATHS = {"hf-plain": {"decoder": "hf", "merge_for_sampling": False},
         "hf-1by1": {"decoder": "hf", "merge_for_sampling": False},
         "hf-merged": {"decoder": "hf", "merge_for_sampling": True},
         "lean": {"decoder": "lean", "merge_for_sampling": True},
         "llamacpp": {"decoder": "llamacpp", "llamacpp_weights": "f32"},
         "llamacpp-q8": {"decoder": "llamacpp", "llamacpp_weights": "q8_0"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=4, help="rounds, each on new prompts and seed")
    args = ap.parse_args()

    from ttrl.backends.causal import CausalBackend
    from ttrl.config import Config
    from ttrl.extractors import get_extractor
    from ttrl.tasks import load_dataset

    cfg = Config()
    torch.manual_seed(0)
    policy = CausalBackend(cfg.model)
    with torch.no_grad():  # a trained-looking adapter, so merged and unmerged paths both do real work
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3, generator=torch.Generator().manual_seed(1))
    data = load_dataset(cfg.data.data, cfg.data.task_args, max(args.prompts) * args.repeats, 0)
    instruction = get_extractor("number").instruction
    prompts = [policy.render(it.query, instruction) for it in data.items]
    paths = dict(PATHS)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        paths = {p: o for p, o in paths.items() if not p.startswith("llamacpp")}
        print("llama-cpp-python not installed: llamacpp paths skipped")
    for path, opts in paths.items():  # warm-up (and llama.cpp's one-time export of the base weights)
        for k, v in opts.items():
            setattr(policy.cfg, k, v)
        t0 = time.perf_counter()
        policy.generate(prompts[:1], 2, temperature=1.0, max_new_tokens=4, batch_size=8, seed=0)
        if path.startswith("llamacpp"):
            print(f"{path} one-time setup (export of the base weights + load): {time.perf_counter() - t0:.2f} s")
    if "llamacpp" in paths:  # what each training step adds: re-export and reload the changed adapter
        lora = [p for n, p in policy.model.named_parameters() if "lora_" in n]
        times = []
        for r in range(5):
            with torch.no_grad():
                lora[0].add_(0.0)  # an in-place update, as the optimizer makes
            t0 = time.perf_counter()
            with policy.engine.session():  # re-exports and reloads the changed adapter
                pass
            times.append(time.perf_counter() - t0)
        print(f"llamacpp adapter sync per training step: {1e3 * min(times):.0f} ms "
              f"({sum(p.numel() for p in lora) / 1e6:.1f}M LoRA parameters)")

    print(f"default model + LoRA r{cfg.model.lora_r}, T {args.temperature}, up to {args.max_new_tokens} new tokens, "
          f"{args.repeats} rounds, torch threads {torch.get_num_threads()}")
    fast = [p for p in paths if not p.startswith("hf")]
    print("tokens per second; the ratio to hf-plain; the ratio to hf-1by1")
    print(f"{'prompts':>7} {'N':>4} " + "".join(f"{p:>12}" for p in paths) + "".join(f"{p:>13}" for p in fast) * 2)
    for n_prompts in args.prompts:
        for n in args.n:
            rate = {}
            for path, opts in paths.items():
                for k, v in opts.items():
                    setattr(policy.cfg, k, v)
                tokens = seconds = 0.0
                for r in range(args.repeats):
                    these = prompts[r * n_prompts:(r + 1) * n_prompts]
                    calls = [[p] for p in these] if path == "hf-1by1" else [these]
                    t0 = time.perf_counter()
                    groups = [g for c in calls for g in policy.generate(
                        c, n, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                        batch_size=n * len(c), seed=r)]
                    seconds += time.perf_counter() - t0
                    tokens += sum(len(c.ids) for g in groups for c in g)
                rate[path] = tokens / seconds
            print(f"{n_prompts:>7} {n:>4} " + "".join(f"{rate[p]:>12.0f}" for p in paths)
                  + "".join(f"{rate[p] / rate['hf-plain']:>12.2f}x" for p in fast)
                  + "".join(f"{rate[p] / rate['hf-1by1']:>12.2f}x" for p in fast), flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=2)
    main()
