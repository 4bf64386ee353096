"""How a query becomes the user message: prompt, lettered choices, answer-format instruction."""
from __future__ import annotations

import string

from .data import Query


def user_message(query: Query, instruction: str) -> str:
    parts = [query.prompt.strip()]
    if query.choices:
        parts.append("\n".join(f"{string.ascii_uppercase[i]}. {c}" for i, c in enumerate(query.choices)))
    if instruction:
        parts.append(instruction)
    return "\n".join(parts)
