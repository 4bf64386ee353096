"""Minimum-Bayes-risk (medoid) reward for long open-ended answers such as transcripts.

r_i = mean over the other parsed samples j of sim(a_i, a_j), with a_j as the reference: the
sample-based MBR gain of Kumar & Byrne (2004), whose argmax is the MBR / medoid pick used for ASR
system combination. Exact-match votes give nothing when every transcript differs by a word; this
credits partial agreement. Answers are the extractor's (for speech: the `transcript` extractor's
normalised text). Unparsable (None or blank) answers get 0 and are left out of the others' means,
as empty responses are in the embedding rewards; a lone parsed answer gets 1 (it agrees with itself).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import Group, RewardContext, RewardOutput, register_reward

SIMILARITIES = ("wer", "cer", "chrf")


def similarity(hyp: str, ref: str, kind: str) -> float:
    """1 - WER or 1 - CER (jiwer; capped at 0: insertions can push an error rate past 1), or chrF/100
    (sacrebleu defaults: character 6-grams, beta 2; Popovic 2015). `ref` plays the reference."""
    if kind == "chrf":
        import sacrebleu

        return float(sacrebleu.sentence_chrf(hyp, [ref]).score) / 100.0
    import jiwer

    if kind == "wer":
        return max(0.0, 1.0 - float(jiwer.wer(ref, hyp)))
    if kind == "cer":
        return max(0.0, 1.0 - float(jiwer.cer(ref, hyp)))
    raise ValueError(f"mbr similarity must be one of {', '.join(SIMILARITIES)}, got {kind!r}")


def similarity_matrix(answers: list[str], kind: str) -> np.ndarray:
    """S[i, j] = sim(hypothesis a_i, reference a_j); identical strings are 1 without a call."""
    n = len(answers)
    S = np.ones((n, n))
    for i in range(n):
        for j in range(n):
            if i != j and answers[i] != answers[j]:
                S[i, j] = similarity(answers[i], answers[j], kind)
    return S


def mbr_rewards(answers, kind: str = "wer") -> tuple[list[float], dict[str, float]]:
    """Per-sample mean similarity to the other parsed answers; diagnostics: mean pairwise similarity
    and the MBR pick's reward."""
    valid = [i for i, a in enumerate(answers) if a is not None and a.strip()]
    r = np.zeros(len(answers))
    if len(valid) == 1:
        r[valid[0]] = 1.0
    if len(valid) >= 2:
        S = similarity_matrix([answers[i] for i in valid], kind)
        r[valid] = (S.sum(1) - np.diag(S)) / (len(valid) - 1)
    diags = {"mean_pairwise_similarity": float(r[valid].mean()) if valid else 0.0,
             "mbr_top_reward": float(r.max()) if len(r) else 0.0}
    return r.tolist(), diags


@dataclass(frozen=True)
class MBRParams:
    similarity: str = field(
        default="wer",
        metadata={"help": "sim(a_i, a_j): wer = max(0, 1 - WER), cer = max(0, 1 - CER) (jiwer), chrf = chrF/100 "
                          "(sacrebleu; Popovic 2015); MBR over samples as in Kumar & Byrne 2004",
                  "choices": SIMILARITIES},
    )


@register_reward(
    "mbr",
    help="Minimum Bayes risk (Kumar & Byrne 2004): mean similarity (1 - WER, 1 - CER or chrF) of a sample's answer "
         "to the other samples' answers; the medoid gets the most.",
    params=MBRParams,
)
def mbr(group: Group, params: MBRParams, ctx: RewardContext) -> RewardOutput:
    if params.similarity not in SIMILARITIES:
        raise ValueError(f"mbr similarity must be one of {', '.join(SIMILARITIES)}, got {params.similarity!r}")
    rewards, diags = mbr_rewards(list(group.answers), params.similarity)
    return RewardOutput(rewards, diags)
