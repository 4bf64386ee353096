"""Answer extractors: response -> canonical answer (or None), plus each type's equivalence."""
from . import _load_all  # noqa: F401  (registers the built-in extractors)
from .base import EXTRACTORS, Extractor, equivalence_classes, get_extractor, register_extractor

__all__ = ["EXTRACTORS", "Extractor", "equivalence_classes", "get_extractor", "register_extractor"]
