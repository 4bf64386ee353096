"""Rollout throughput: N samples of one prompt (and of several prompts at once) on the default model with a
LoRA adapter, by each sampling path, measured side by side in one run.

    python bench/rollout.py [--n 8 32] [--prompts 1 4] [--max-new-tokens 48] [--repeats 2]

Paths:
  hf-plain    transformers generate on the peft model, prompt repeated N times (what TRL does)
  hf-merged   the same with the LoRA merged into transient weight copies (ttrl's session-1 sampler)
  lean        ttrl's decode loop: shared prefill, preallocated KV cache, finished rows leave the batch
  llamacpp    llama.cpp sequences sharing the prompt's KV cells, F32 weights + the LoRA adapter (when
              llama-cpp-python is installed); the adapter sync a training step adds is timed separately
  llamacpp-q8 the same on Q8_0 weights (a close but different policy: the update reweights its tokens)
Throughput counts real sampled tokens (up to and including EOS); ratios are against hf-plain.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

PATHS = {"hf-plain": dict(decoder="hf", merge_for_sampling=False),
         "hf-merged": dict(decoder="hf", merge_for_sampling=True),
         "lean": dict(decoder="lean", merge_for_sampling=True),
         "llamacpp": dict(decoder="llamacpp", llamacpp_weights="f32"),
         "llamacpp-q8": dict(decoder="llamacpp", llamacpp_weights="q8_0")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from ttrl.config import Config
    from ttrl.extractors import get_extractor
    from ttrl.policy.hf_causal import HFCausalPolicy
    from ttrl.tasks import load_dataset

    cfg = Config()
    torch.manual_seed(0)
    policy = HFCausalPolicy(cfg.model)
    with torch.no_grad():  # a trained-looking adapter, so merged and unmerged paths both do real work
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3, generator=torch.Generator().manual_seed(1))
    data = load_dataset(cfg.data.data, cfg.data.task_args, max(args.prompts), 0)
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
            policy._llamacpp()
            times.append(time.perf_counter() - t0)
        print(f"llamacpp adapter sync per training step: {1e3 * min(times):.0f} ms "
              f"({sum(p.numel() for p in lora) / 1e6:.1f}M LoRA parameters)")

    print(f"default model + LoRA r{cfg.model.lora_r}, T {args.temperature}, up to {args.max_new_tokens} new tokens, "
          f"best of {args.repeats}, torch threads {torch.get_num_threads()}")
    fast = [p for p in paths if p not in ("hf-plain", "hf-merged")]
    print("tokens per second, and the ratio to hf-plain")
    print(f"{'prompts':>7} {'N':>4} " + "".join(f"{p:>12}" for p in paths) + "".join(f"{p:>13}" for p in fast))
    for n_prompts in args.prompts:
        for n in args.n:
            rate = {}
            for path, opts in paths.items():
                for k, v in opts.items():
                    setattr(policy.cfg, k, v)
                best = 0.0
                for r in range(args.repeats):
                    t0 = time.perf_counter()
                    groups = policy.generate(prompts[:n_prompts], n, temperature=args.temperature,
                                             max_new_tokens=args.max_new_tokens, batch_size=n * n_prompts, seed=r)
                    dt = time.perf_counter() - t0
                    best = max(best, sum(len(c.ids) for g in groups for c in g) / dt)
                rate[path] = best
            print(f"{n_prompts:>7} {n:>4} " + "".join(f"{rate[p]:>12.0f}" for p in paths)
                  + "".join(f"{rate[p] / rate['hf-plain']:>12.2f}x" for p in fast), flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=2)
    main()
