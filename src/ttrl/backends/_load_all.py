"""Importing this module registers every built-in model backend."""
from . import causal, speech, t2i, vision  # noqa: F401
