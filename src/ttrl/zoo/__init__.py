"""Converters for models that ship inside wheels in formats transformers cannot read (one file per family)."""
