"""Importing this module registers every bundled model."""
from . import gguf, tiny_janus, tiny_omni, tiny_vlm, whisper  # noqa: F401
