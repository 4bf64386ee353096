"""Protocols decide which items are adapted on, when, and what is evaluated. Registered by name."""
from __future__ import annotations

from collections.abc import Callable

PROTOCOLS: dict[str, Callable] = {}


def register_protocol(name: str):
    def deco(fn):
        PROTOCOLS[name] = fn
        return fn

    return deco


def get_protocol(name: str) -> Callable:
    from . import online, transductive  # noqa: F401

    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]
