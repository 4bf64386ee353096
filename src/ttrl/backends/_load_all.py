"""Importing this module registers every built-in model backend."""
from . import causal, omni, speech, t2i, vision  # noqa: F401
