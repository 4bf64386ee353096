"""Answering and scoring items. Labels are used here, and only here and in the protocols' metrics."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from .backends.base import Backend
from .data import Dataset, Item, Query
from .extractors import Extractor
from .group import Group
from .seeds import derive


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


def answer(policy: Backend, extractor: Extractor, queries: Sequence[Query], instruction: str, *, n: int = 1,
           temperature: float | None = None, top_p: float = 1.0, max_new_tokens: int, batch_size: int,
           seed: int, desc: str, skip: set[str] = frozenset()):
    """Yield a Group per query (its n responses and answers), a generate call at a time, so callers can write
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
                                 batch_size=batch_size, seed=derive(seed, "answer", start))
        for q, comps in zip(qs, groups):
            if q.id not in skip:
                yield Group.build(q, [c.text for c in comps], extractor)
        bar.update(len(qs))
    bar.close()
