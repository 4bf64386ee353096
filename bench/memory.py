"""Update memory: peak resident memory and time of one forward/backward micro-batch, with and without gradient
checkpointing and prompt-shared scoring, each setting in its own process (peak RSS only grows within one).

    python bench/memory.py [--prompts 2] [--n 8] [--tokens 48] [--passes 3]

The micro-batch is the default one (16 sequences = 2 prompts x 8 samples) of full-length completions on the
default model with its LoRA adapter; "peak MB" is how far the update raises the process's peak RSS above where it
stood once the model was loaded. The first pass is a warm-up and is not timed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

SETTINGS = [("shared", True, False), ("shared + checkpointing", True, True),
            ("full", False, False), ("full + checkpointing", False, True)]


def one(share: bool, checkpointing: bool, prompts: int, n: int, tokens: int, passes: int) -> dict:
    import resource
    import time

    import torch

    from ttrl.backends.causal import CausalBackend
    from ttrl.config import ModelConfig
    from ttrl.data import Query
    from ttrl.rollout import Completion

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    policy = CausalBackend(ModelConfig(share_prompt=share, gradient_checkpointing=checkpointing), False)
    gen = torch.Generator().manual_seed(0)
    comps = []
    for i in range(prompts):
        text = policy.render(Query(str(i), f"Calculate {i + 4} + {7 * i + 5}."), "Give a single number.").text
        pid = tuple(policy.tokenizer(text, add_special_tokens=False).input_ids)
        comps += [Completion(pid, tuple(torch.randint(0, 49152, (tokens,), generator=gen).tolist()), "", False)
                  for _ in range(n)]
    base, times = peak_mb(), []
    for _ in range(passes + 1):  # the first pass warms up and is not timed
        t = time.perf_counter()
        for p in policy.trainable_parameters():
            p.grad = None
        logp, _ = policy.token_logprobs(comps, temperature=0.7)
        logp.sum().backward()
        times.append(time.perf_counter() - t)
    return {"peak_mb": peak_mb() - base, "s_per_pass": sum(times[1:]) / passes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)  # child process: share, checkpointing
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(bool(args.one[0]), bool(args.one[1]), args.prompts, args.n, args.tokens, args.passes)))
        return
    rows = {}
    for name, share, ckpt in SETTINGS:
        out = subprocess.run([sys.executable, __file__, "--one", str(int(share)), str(int(ckpt)),
                              "--prompts", str(args.prompts), "--n", str(args.n), "--tokens", str(args.tokens),
                              "--passes", str(args.passes)], capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{args.prompts} prompts x {args.n} samples x {args.tokens} tokens, one forward/backward, "
          f"mean of {args.passes} passes")
    ref = rows["shared"]
    print(f"{'setting':24s} {'peak MB':>8s} {'s/pass':>7s} {'memory':>7s} {'time':>6s}  (vs shared)")
    for name, r in rows.items():
        print(f"{name:24s} {r['peak_mb']:8.0f} {r['s_per_pass']:7.2f} {r['peak_mb'] / ref['peak_mb']:6.2f}x "
              f"{r['s_per_pass'] / ref['s_per_pass']:5.2f}x")


if __name__ == "__main__":
    main()
