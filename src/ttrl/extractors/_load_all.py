"""Importing this module registers every built-in extractor."""
from . import choice, label, math, number, text, transcript  # noqa: F401
