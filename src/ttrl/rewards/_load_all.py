"""Importing this module registers every built-in reward family."""
from . import control, voting  # noqa: F401
