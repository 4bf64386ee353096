"""How much can the Meta-TTRL reward gain at most on a model's own drawings? The analogue of maj@N against greedy
for a consensus reward: GRPO can only move a policy towards the images its reward ranks high, so the pixel
checker's score of the reward's best of N images bounds what sharpening towards that reward buys.

For each test prompt the model draws N images (the run's sampler: guidance, temperature); the reward is the
Meta-TTRL reward (rule rubric, the policy as judge, geometric mean of P(Yes) / (P(Yes) + P(No))). Reported per
GenEval-style category over prompts: one image (the mean over all N), the judge's best of k (k = 4, 8, ..., N,
the first k images), the same images picked by ANOTHER prompt's rubric (what a prompt-blind preference, e.g. for
more colours, buys on its own), pass@k (any of the k is right: the oracle), and with `--judge FOLDER` the best of k
by another judge (as `ttrl run --introspector FOLDER` would rank them).

    PYTHONPATH=src python scripts/judge_best_of_n.py [--model tiny-janus] [--prompts 40] [--n 16] [--seed 0] [--judge FOLDER]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ttrl.backends.t2i import JanusBackend
from ttrl.config import ModelConfig
from ttrl.rewards.meta_ttrl import MetaTTRLParams, meta_ttrl_rewards, rubric_scores
from ttrl.rubric import rule_rubric
from ttrl.scenes import CATEGORIES, check
from ttrl.tasks.scenes import split
from ttrl.zoo import resolve_model

KEYS = ("full",) + CATEGORIES


REWARD = MetaTTRLParams()  # the reward's own defaults: batch size and floor as in `ttrl run --reward meta_ttrl`


def rewards(backend, images, prompt: str) -> np.ndarray:
    scores = rubric_scores(backend, images, rule_rubric(prompt), REWARD.batch_size)
    return np.array(meta_ttrl_rewards(scores, REWARD.floor))


def frozen(model: str) -> JanusBackend:
    """A Janus model (a zoo name or folder) for drawing and judging only: no reference copy, nothing trained."""
    return JanusBackend(ModelConfig(model=str(resolve_model(model)), device="cpu", finetune="full"),
                        need_reference=False)


def share(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r]
    return round(100 * float(np.mean(vals)), 1) if vals else None


def select(truth: np.ndarray, reward: np.ndarray | None, how: str | None) -> float:
    """One prompt's checker value under a selection rule over its first len(truth) images."""
    if how is None:
        return float(np.mean(truth))
    if how == "any":
        return float(np.max(truth))
    return float(truth[int(np.argmax(reward[:len(truth)]))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-janus", help="tiny-janus or a Janus folder")
    ap.add_argument("--prompts", type=int, default=40, help="test prompts, a fixed sample (seeded)")
    ap.add_argument("--n", type=int, default=16, help="images per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--judge", help="also rank the same drawings by this judge (a Janus folder: --introspector's)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    backend = frozen(a.model)
    judge = frozen(a.judge) if a.judge else None
    test = split("test")
    pick = np.sort(np.random.default_rng(a.seed).permutation(len(test))[:a.prompts])
    specs = [test[i] for i in pick]
    per = []  # per prompt: checker results [N] per key, rewards [N] by selection rule
    for j, spec in enumerate(specs):
        samples = backend.generate_images([spec.prompt()], a.n, seed=a.seed * 100_003 + int(pick[j]))[0]
        images = backend.decode(samples)
        checks = [check(im, spec) for im in images]
        truth = {k: np.array([c.full if k == "full" else c.categories.get(k, np.nan) for c in checks], dtype=float)
                 for k in KEYS}
        other = specs[(j + 1) % len(specs)]  # a different prompt's rubric judges the same images
        ranked = {"own": rewards(backend, images, spec.prompt()), "other": rewards(backend, images, other.prompt())}
        if judge is not None:
            ranked["judge"] = rewards(judge, images, spec.prompt())
        per.append((truth, ranked))
    out = {"model": a.model, "judge": a.judge, "prompts": a.prompts, "n": a.n, "seed": a.seed}
    ks = sorted({k for k in (4, 8, 16, 32, a.n) if k <= a.n})
    rows = [("one image", None, a.n)] + [(f"judge best of {k}", "own", k) for k in ks] + \
        [(f"other prompt's judge best of {k}", "other", k) for k in ks] + [(f"pass@{k}", "any", k) for k in ks] + \
        ([(f"--judge's best of {k}", "judge", k) for k in ks] if judge is not None else [])
    for name, how, k in rows:
        picked = [{key: select(truth[key][:k], ranked.get(how), how) for key in KEYS
                   if not np.isnan(truth[key][0])} for truth, ranked in per]
        out[name] = {key: share(picked, key) for key in KEYS}
    own = np.concatenate([ranked["own"] for _, ranked in per])
    full = np.concatenate([t["full"] for t, _ in per])
    out["reward mean: full right / not"] = [round(float(own[full == 1].mean()), 4) if full.any() else None,
                                            round(float(own[full == 0].mean()), 4)]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
