"""Importing this module registers every built-in model backend."""
from . import causal, speech, vision  # noqa: F401
