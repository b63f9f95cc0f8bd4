"""Backends: the only place that knows which device the network runs on (CPU, CUDA, or plain torch)."""

from .base import Backend
from .select import resolve_device, select_backend

__all__ = ["Backend", "resolve_device", "select_backend"]
