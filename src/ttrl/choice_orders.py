"""Option-order voting: a multiple-choice item's rollouts see its options in several orders, and the vote counts
the option a sample chose (mapped back to the original letter), not the letter it wrote.

A letter prior ("A" whatever the question: Zheng et al. 2024, "Large Language Models Are Not Robust Multiple
Choice Selectors", measure it in every model they test) then points at different options in different orders, so
it splits the vote instead of adding up to consensus and earns no reward; only a preference for an option's
content agrees with itself across orders. This is their permutation debiasing moved inside the vote, and it is
what keeps a majority vote on A-D letters from collapsing every item onto one letter (docs/results.md).
The first order is always the original one; the others are distinct random permutations drawn from the run seed.
"""
from __future__ import annotations

import dataclasses
import math
import string

import numpy as np

from .data import Query


def option_orders(n_options: int, k: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """k orders of n options: the identity, then distinct random permutations (fewer if n! < k)."""
    orders = [tuple(range(n_options))]
    k = min(k, math.factorial(n_options))
    while len(orders) < k:
        order = tuple(int(i) for i in rng.permutation(n_options))
        if order not in orders:
            orders.append(order)
    return orders


def reorder(query: Query, order: tuple[int, ...]) -> Query:
    """The query with its options shown in this order: position j shows original option order[j]."""
    return dataclasses.replace(query, choices=tuple(query.choices[i] for i in order))


def to_original(letter: str | None, order: tuple[int, ...]) -> str | None:
    """The original letter of the option a sample picked when the options were shown in `order`."""
    if letter is None:
        return None
    j = string.ascii_uppercase.find(letter)
    return string.ascii_uppercase[order[j]] if 0 <= j < len(order) else None
