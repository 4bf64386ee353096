"""A ceiling for Meta-TTRL, not a ttrl reward: the same run with the evaluation's pixel checker as the reward.

Is the Meta-TTRL gain limited by its judge (the reward ranks drawings badly) or by the update (GRPO on this
generator, at this budget, cannot move the drawings far even towards a perfect ranking)? This script answers it the
way TTRL (Zuo et al. 2025) bounds its label-free reward with an RL run that sees the labels: it registers a reward
`scene_checker` that scores each drawing with scenes.check against the scene its prompt names (the share of the
applicable GenEval-style categories that hold, plus `full`, over their count), then runs an ordinary `ttrl run`
with every other flag as given. The prompt alone determines the scene (a `scenes:` prompt is generated from it),
so the trainer still never receives a label field; but the reward IS the evaluation, so its numbers are a
ceiling for what a judge could buy, never a result of the method.

    PYTHONPATH=src python scripts/meta_ttrl_checker_ceiling.py run --model tiny-janus --data scenes:test \
        --reward scene_checker ... (the flags of docs/meta_ttrl.md's command)
"""
from __future__ import annotations

import sys

from PIL import Image

from ttrl.cli import main
from ttrl.rewards.base import Group, NoParams, RewardContext, RewardOutput, register_reward
from ttrl.scenes import all_specs, check

SCENES = {spec.prompt(): spec for spec in all_specs()}


def checker_score(path: str, prompt: str) -> float:
    """The share of the checks that hold (each applicable category, and full)."""
    with Image.open(path) as im:
        result = check(im.convert("RGB"), SCENES[prompt])
    values = list(result.categories.values()) + [result.full]
    return sum(values) / len(values)


@register_reward("scene_checker", help="CEILING DIAGNOSTIC: the evaluation's pixel checker as the reward",
                 params=NoParams)
def scene_checker(group: Group, params: NoParams, ctx: RewardContext) -> RewardOutput:
    rewards = [checker_score(p, group.query.prompt) for p in group.responses]
    return RewardOutput(rewards, {"checker_full_share": sum(r == 1.0 for r in rewards) / len(rewards)})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
