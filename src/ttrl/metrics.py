"""Evaluation-only metrics, for data sets with labels. Pure functions; nothing here reaches a reward.

pass@k is the unbiased estimator of Chen et al. (2021); BLEU comes from sacrebleu, ROUGE-L from
rouge-score and WER/CER from jiwer, so the numbers match what papers report rather than a hand-written variant.
"""
from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Any

from .extractors import Extractor
from .group import majority_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn without replacement from n is correct), c of n correct:
    1 - C(n-c, k) / C(n, k), as the product prod_{i=n-c+1}^{n} (1 - k/i) to avoid huge binomials."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k contains a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def maj_at_n(answers: Sequence[str | None], is_correct: Callable[[Any], bool], extractor: Extractor | None = None) -> float:
    """1.0 if the majority answer (the vote of `ttrl.group`: equivalence classes of the
    extractor, ties to the first seen, None never wins) is correct, else 0.0."""
    top = majority_answer(answers, extractor or Extractor())
    return 0.0 if top is None else float(bool(is_correct(top)))


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exp smoothing), 0..100, one reference each."""
    import sacrebleu

    _check(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def sentence_bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU (sacrebleu: effective order, exp smoothing), 0..100."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, [reference]).score)


def rouge_l(predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = True) -> float:
    """Mean ROUGE-L F-measure (rouge-score, Porter stemming as in its usual use), 0..1; 0 for no pairs."""
    from rouge_score import rouge_scorer

    _check(predictions, references)
    if not predictions:
        return 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    # rouge-score's argument order is (target, prediction)
    return sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)) / len(predictions)


def embedding_similarity(predictions: Sequence[str], references: Sequence[str], embedder=None) -> float:
    """Mean cosine of each prediction to its reference under a sentence embedder (default: the bundled
    all-MiniLM-L6-v2), as OP-TTRAV reports it; -1..1. The embedding rewards use the same space by default,
    so read it beside ROUGE-L and BLEU, which they do not optimise."""
    _check(predictions, references)
    if not predictions:
        return 0.0
    if embedder is None:
        from .rewards.embedder import Embedder

        embedder = Embedder()
    p, r = embedder.encode(list(predictions)), embedder.encode(list(references))
    return float((p * r).sum(axis=1).mean())


def wer(predictions: Sequence[str | None], references: Sequence[str]) -> float:
    """Corpus word error rate (jiwer): (substitutions + deletions + insertions) / reference words over
    all pairs, not a mean of per-utterance rates. None (no transcript) counts as all deletions.
    Normalise both sides first (ttrl.extractors.transcript.normalize_transcript), as Whisper's WERs do."""
    import jiwer

    _check(predictions, references)
    if not predictions:
        raise ValueError("wer needs at least one pair")
    return float(jiwer.wer(list(references), [p or "" for p in predictions]))


def cer(predictions: Sequence[str | None], references: Sequence[str]) -> float:
    """Corpus character error rate (jiwer), as `wer` over characters (spaces included)."""
    import jiwer

    _check(predictions, references)
    if not predictions:
        raise ValueError("cer needs at least one pair")
    return float(jiwer.cer(list(references), [p or "" for p in predictions]))


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style: lowercase, drop punctuation and the articles a/an/the, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(pred: str | None, ref: str) -> bool:
    return pred is not None and normalize_answer(pred) == normalize_answer(ref)
