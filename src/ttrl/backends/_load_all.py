"""Importing this module registers every built-in model backend."""
from . import causal, vision  # noqa: F401
