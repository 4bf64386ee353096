"""Answering and scoring items. Labels are used here, and only here and in the protocols' metrics."""
from __future__ import annotations

from typing import Callable, Sequence

from tqdm.auto import tqdm

from .data import Dataset, Item, Query
from .extractors import Extractor, equivalence_classes
from .policy.base import Policy
from .rewards.voting import majority_class


def make_scorer(dataset: Dataset, extractor: Extractor) -> Callable[[str | None, Item], bool | None]:
    """pred, item -> correct? (None when the item has no label). Task scorers win over equivalence."""

    def score(pred: str | None, item: Item) -> bool | None:
        if item.answer is None:
            return None
        if dataset.scorer is not None:
            return bool(dataset.scorer(pred, item))
        if pred is None:
            return False
        gold = extractor.extract(str(item.answer), item.query.choices) or str(item.answer).strip()
        return pred == gold or extractor.equivalent(pred, gold)

    return score


def answer(policy: Policy, extractor: Extractor, queries: Sequence[Query], instruction: str, *, n: int = 1,
           temperature: float | None = None, top_p: float = 1.0, max_new_tokens: int, batch_size: int,
           seed: int, desc: str, skip: set[str] = frozenset()):
    """Yield (query, texts, answers) per query, a generate call at a time, so callers can write
    results as they go. Queries whose id is in `skip` (done before a resume) are not yielded; chunks
    and seeds stay those of the full list, so a resumed run samples exactly what an unbroken one does."""
    chunk = max(1, batch_size // n)
    bar = tqdm(total=len(queries), desc=desc, unit="item", disable=not desc)
    for start in range(0, len(queries), chunk):
        qs = queries[start:start + chunk]
        if all(q.id in skip for q in qs):
            bar.update(len(qs))
            continue
        prompts = [policy.render(q, instruction) for q in qs]
        groups = policy.generate(prompts, n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, seed=seed + start)
        for q, comps in zip(qs, groups):
            if q.id in skip:
                continue
            texts = [c.text for c in comps]
            yield q, texts, [extractor.extract(t, q.choices) for t in texts]
        bar.update(len(qs))
    bar.close()


def majority_answer(answers: Sequence[str | None], extractor: Extractor) -> str | None:
    classes = equivalence_classes(answers, extractor)
    maj = majority_class(classes)
    return None if maj is None else answers[classes.index(maj)]
