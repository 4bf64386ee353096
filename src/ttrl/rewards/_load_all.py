"""Importing this module registers every built-in reward family."""
from . import certainty, cluster, control, embedding, judge, mbr, meta_ttrl, prior, voting  # noqa: F401
