"""Importing this module registers every bundled model."""
from . import gguf, tiny_vlm, whisper  # noqa: F401
