"""OP-TTRAV self-judge: the policy itself scores each response 0-10 against a label-free anchor.

The anchor is a response chosen from the group (the majority answer's first response), never a
label. All N judgements go through the policy's chat template in one greedy `generate` call;
a judgement without a number in 0..10 counts as 0.5 (METHODS.md, OP-TTRAV).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..data import Query
from ..prompting import user_message
from .base import Group, RewardContext, RewardOutput, register_reward

UNPARSED = 0.5  # OP-TTRAV: an unparsable judgement is neither credit nor blame

JUDGE_INSTRUCTION = "Reply with only the score, an integer from 0 to 10."

# a number in the judgement; the lookarounds keep digits inside words ("Qwen2", "1st") out,
# and the sign lets "-3" count as out of range rather than as 3
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")
# small judges often restate the question ("2+3 =") instead of scoring: numbers next to these are
# arithmetic, not a score ("/" stays allowed for "7/10")
_ARITH = set("+*^=×÷")


@dataclass(frozen=True)
class JudgeParams:
    anchor: str = field(default="majority", metadata={
        "help": "OP-TTRAV self-judge anchor: majority = first response of the majority answer "
                "(fallback: first non-empty response); label-free", "choices": ("majority",)})
    max_new_tokens: int = field(default=8, metadata={"help": "tokens for each judgement (OP-TTRAV: a short generation)"})
    batch_size: int = field(default=32, metadata={"help": "judge prompts per forward batch"})
    prefill: str = field(default="Score:", metadata={
        "help": "start of the judge's reply, appended after the chat template so the next tokens are the "
                "score (small models otherwise restate the question); empty = none"})
    max_chars: int = field(default=1500, metadata={
        "help": "truncate anchor and response to this many characters in the judge prompt (bounds cost)"})


def choose_anchor(group: Group, how: str = "majority") -> str:
    """The response every sample is judged against, chosen from the group alone."""
    if how != "majority":
        raise ValueError(f"self_judge anchor must be 'majority', got {how!r}")
    maj = group.majority_class
    if maj is not None:
        return group.responses[group.classes.index(maj)]
    # no parsed answer (free-form output the extractor cannot read): first non-empty response
    return next((r for r in group.responses if r.strip()), group.responses[0])


def _clip(text: str, n: int) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n] + " ..."


def judge_prompt(question: str, anchor: str, response: str, max_chars: int = 1500) -> str:
    """The judge's user message (the instruction is appended by the policy's render)."""
    return (f"Question:\n{question.strip()}\n\n"
            f"Reference answer:\n{_clip(anchor, max_chars)}\n\n"
            f"Candidate answer:\n{_clip(response, max_chars)}\n\n"
            "How well does the candidate answer agree with the reference answer? "
            "Score from 0 (unrelated or contradicting) to 10 (the same answer).")


def parse_score(judgement: str) -> float | None:
    """First number in the text that is not arithmetic, scaled to [0, 1] ("8" -> 0.8,
    "Score: 7/10" -> 0.7); None when there is none or it lies outside 0..10."""
    text = judgement.replace("**", " ")  # markdown bold ("**9**") is not multiplication
    for m in _NUMBER.finditer(text):
        before, after = text[:m.start()].rstrip()[-1:], text[m.end():].lstrip()[:1]
        if before in _ARITH or after in _ARITH:
            continue
        x = float(m.group())
        return x / 10 if 0 <= x <= 10 else None
    return None


@register_reward(
    "self_judge",
    help="OP-TTRAV self-judge: the policy scores each response 0-10 against the group's majority response; "
         "unparsable = 0.5.",
    params=JudgeParams,
    needs=("policy",),
)
def self_judge(group: Group, params: JudgeParams, ctx: RewardContext) -> RewardOutput:
    anchor = choose_anchor(group, params.anchor)
    # choices go into the question text so they sit before the judge's instruction, not after it
    question = user_message(Query(group.query.id, group.query.prompt, group.query.choices), "")
    prompts = [ctx.policy.render(Query(id=f"{group.query.id}/judge{i}",
                                       prompt=judge_prompt(question, anchor, r, params.max_chars),
                                       images=group.query.images, audio=group.query.audio),
                                 JUDGE_INSTRUCTION) + params.prefill
               for i, r in enumerate(group.responses)]
    out = ctx.policy.generate(prompts, 1, temperature=None, max_new_tokens=params.max_new_tokens,
                              batch_size=params.batch_size, seed=int(ctx.rng.integers(2**31)))
    scores = [parse_score(g[0].text) for g in out]
    rewards = [UNPARSED if s is None else s for s in scores]
    return RewardOutput(rewards, {"judge_parsed": sum(s is not None for s in scores) / len(scores),
                                  "judge_mean": sum(rewards) / len(rewards)})
