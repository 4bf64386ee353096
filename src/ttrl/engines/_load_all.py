"""Importing this module registers every built-in rollout engine."""
from . import hf, lean, llamacpp  # noqa: F401
