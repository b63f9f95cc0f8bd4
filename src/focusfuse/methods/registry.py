"""Make a fusion method by name, its weights loaded onto a backend's device."""

from __future__ import annotations

import os

from ..backends.base import Backend
from . import METHOD_NAMES
from .base import FusionMethod
from .gacn.method import GacnMethod
from .gacn.model import GACN
from .gacn.weights import load_model

METHODS = METHOD_NAMES


def make_method(name: str, backend: Backend, *, weights: str | os.PathLike | GACN | None = None,
                strategy: str = "calibrated", reduce: int = 1) -> FusionMethod:
    """Method ``name`` with its weights (if it has any) loaded onto ``backend``'s device (options already
    validated); ``strategy`` ``pair``: two frames, keeping the decision maps."""
    if name == "wavelet":
        from .wavelet.method import WaveletMethod

        return WaveletMethod(backend, pair=strategy == "pair")
    if name != "gacn":
        from ..errors import UsageError

        raise UsageError(f"unknown method {name!r} (use {', '.join(METHODS)})", option="method")
    return GacnMethod(load_model(weights, backend.device), backend, strategy, reduce)


__all__ = ["METHODS", "make_method"]
