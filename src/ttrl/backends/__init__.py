"""Model backends, one per modality: causal (text), vision (image-text-to-text)."""
from .base import BACKENDS, Backend, all_backends, backend_name, register_backend

__all__ = ["BACKENDS", "Backend", "all_backends", "backend_name", "register_backend"]
