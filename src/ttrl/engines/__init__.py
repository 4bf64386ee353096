"""Rollout engines: how a backend's samples are drawn (lean loop, transformers generate, llama.cpp)."""
from .base import ENGINES, Engine, SampleOptions, all_engines, register_engine

__all__ = ["ENGINES", "Engine", "SampleOptions", "all_engines", "register_engine"]
