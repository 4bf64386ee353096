"""Meta-TTRL (METHODS.md): the model judges its own images against a rubric of yes/no questions.

For each image and question, s = P(Yes) / (P(Yes) + P(No)) from the introspector's next-token distribution
(understanding mode); the image's reward is the geometric mean of its s over the rubric, so one clearly failed
question pulls the reward down more than an arithmetic mean would. The rubric is written once per prompt (by the
model, or by the rule-based builder when the model's output does not parse) and kept in the run state. An external
introspector (`--introspector`, RewardContext.introspector) takes the policy's place at the meta level.

In a text-to-image group the responses are the paths of the generated images; the policy is a unified backend
(backends/t2i.py) that offers `yes_probability(images, questions)`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data import Query
from ..rubric import MAX_QUESTIONS, build_rubric, rubric_request, rule_rubric
from .base import Group, RewardContext, RewardOutput, register_reward

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetaTTRLParams:
    rubric: str = field(default="self", metadata={
        "help": "who writes the rubric: self = the policy (Meta-TTRL), rule = the rule-based builder from the prompt "
                "text (ablation; also the fallback when the policy's rubric does not parse)",
        "choices": ("self", "rule")})
    max_questions: int = field(default=MAX_QUESTIONS, metadata={"help": "questions kept per rubric (rubric.py)"})
    rubric_tokens: int = field(default=160, metadata={"help": "tokens the policy may write for a rubric (greedy)"})
    floor: float = field(default=1e-4, metadata={
        "help": "s is clipped to at least this before the log of the geometric mean, so one s = 0 does not erase "
                "the other questions' differences (a reward of 0 for every failing image would tie them)"})
    batch_size: int = field(default=16, metadata={"help": "image-question pairs per introspection forward pass"})


def yes_share(p_yes: float, p_no: float) -> float:
    """s = P(Yes) / (P(Yes) + P(No)); 0.5 when the model puts no mass on either."""
    total = p_yes + p_no
    return 0.5 if total <= 0 else p_yes / total


def geometric_mean(scores: Sequence[float], floor: float) -> float:
    """exp(mean(log(max(s, floor)))) over one image's questions."""
    if not len(scores):
        raise ValueError("a rubric needs at least one question")
    return math.exp(sum(math.log(max(float(s), floor)) for s in scores) / len(scores))


def meta_ttrl_rewards(scores, floor: float = 1e-4) -> list[float]:
    """Rewards of a group from s [images, questions]."""
    return [geometric_mean(row, floor) for row in np.asarray(scores, dtype=float)]


def rubric_scores(introspector, images: Sequence, questions: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """s [images, questions]: every image asked every question, batch_size image-question pairs per forward pass."""
    pairs = [(img, q) for img in images for q in questions]
    s = []
    for k in range(0, len(pairs), batch_size):
        chunk = pairs[k:k + batch_size]
        s.extend(introspector.yes_probability([p[0] for p in chunk], [p[1] for p in chunk]))
    return np.asarray(s, dtype=float).reshape(len(images), len(questions))


def judge(ctx: RewardContext):
    """The introspector: the policy itself (Meta-TTRL), or the external model given by --introspector, which then
    does the whole meta level (writes the rubric and answers it), as in the paper's self-vs-external comparison."""
    return ctx.introspector if ctx.introspector is not None else ctx.policy


def rubric_for(query: Query, params: MetaTTRLParams, ctx: RewardContext) -> dict:
    """The prompt's rubric, written on first sight and kept in the run state (checkpointed, plain data)."""
    memo = ctx.state.setdefault("meta_ttrl", {})
    if query.id not in memo:
        if params.rubric == "rule":
            questions, source = rule_rubric(query.prompt, params.max_questions), "rule"
        else:
            policy = judge(ctx)
            prompt = policy.render(Query(f"{query.id}/rubric", rubric_request(query.prompt)), "")
            out = policy.generate([prompt], 1, temperature=None, max_new_tokens=params.rubric_tokens,
                                  batch_size=1, seed=int(ctx.rng.integers(2**31)))
            questions, source = build_rubric(out[0][0].text, query.prompt, params.max_questions)
            if source == "rule":
                log.info("meta_ttrl: the policy's rubric for %s did not parse; using the rule-based one", query.id)
        memo[query.id] = {"questions": questions, "source": source}
    return memo[query.id]


@register_reward(
    "meta_ttrl",
    help="Meta-TTRL: geometric mean over a rubric of yes/no questions of P(Yes)/(P(Yes)+P(No)), asked by the "
         "policy about its own image (text-to-image; responses are image paths).",
    params=MetaTTRLParams,
    needs=("policy",),
)
def meta_ttrl(group: Group, params: MetaTTRLParams, ctx: RewardContext) -> RewardOutput:
    rubric = rubric_for(group.query, params, ctx)
    questions = rubric["questions"]
    scores = rubric_scores(judge(ctx), group.responses, questions, params.batch_size)
    rewards = meta_ttrl_rewards(scores, params.floor)
    return RewardOutput(rewards, {"rubric_questions": float(len(questions)),
                                  "rubric_rule": float(rubric["source"] == "rule"),
                                  "yes_share_mean": float(scores.mean())})
