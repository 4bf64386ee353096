"""How the cost of one adaptation step grows with the work: step time against the group size N and against
the response length, split into sampling and update, drawn to docs/scaling.png.

    python bench/scaling.py [--n 4 8 16 32 64] [--lengths 16 32 64 128] [--steps 2]

Responses are held at exactly the token budget (EOS is ignored for the measurement), so each point does
the work its label says. One prompt per step; one warm-up step per point is not timed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def measure(policy, trainer_cls, cfg, queries, n, length, steps):
    from ttrl.extractors import get_extractor
    from ttrl.rewards import Reward

    cfg.sampling.n_votes = cfg.sampling.n_train = n
    cfg.sampling.max_new_tokens = length
    cfg.sampling.batch_size = max(n, 32)
    ext = get_extractor("number")
    trainer = trainer_cls(policy, ext, Reward("random"), cfg.sampling, cfg.grpo, ext.instruction, seed=0)
    rows = []
    for k in range(steps + 1):
        st = trainer.step([queries[k % len(queries)]]).stats
        if k:
            rows.append((st.seconds, st.seconds_sample, st.seconds_update, st.tokens))
    return np.mean(rows, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--fixed-length", type=int, default=48, help="response length for the N curve")
    ap.add_argument("--fixed-n", type=int, default=8, help="group size for the length curve")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default="docs/scaling.png")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ttrl.backends.causal import CausalBackend
    from ttrl.config import Config
    from ttrl.tasks import load_dataset
    from ttrl.trainer import Trainer

    cfg = Config()
    cfg.grpo.prompts_per_step = 1
    torch.manual_seed(0)
    policy = CausalBackend(cfg.model)
    policy.eos_ids = {-1}  # never stop early: every sample is exactly the budget long
    queries = [it.query for it in load_dataset(cfg.data.data, cfg.data.task_args, 8, 0).items]

    curves = {}
    for name, xs, point in (("group size N", args.n, lambda x: (x, args.fixed_length)),
                            ("response length (tokens)", args.lengths, lambda x: (args.fixed_n, x))):
        rows = []
        for x in xs:
            n, length = point(x)
            total, samp, upd, tokens = measure(policy, Trainer, cfg, queries, n, length, args.steps)
            rows.append((total, samp, upd))
            print(f"{name:>26} {x:>4}: step {total:6.2f} s  sampling {samp:6.2f} s  update {upd:6.2f} s  "
                  f"({tokens:.0f} tokens, {tokens / total:.0f} tok/s)", flush=True)
        curves[name] = (xs, np.array(rows))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, (xs, r)) in zip(axes, curves.items()):
        for col, label in enumerate(("step", "sampling", "update")):
            ax.plot(xs, r[:, col], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(name)
        ax.set_ylabel("seconds per step")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title(f"one prompt, {args.fixed_length} tokens per sample")
    axes[1].set_title(f"one prompt, N = {args.fixed_n}")
    fig.suptitle(f"ttrl step cost, SmolLM2-135M + LoRA, {torch.get_num_threads()} CPU threads")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
