"""What a job's report says about how an image was made: provenance line, weights, device memory."""

from __future__ import annotations

import platform
import resource
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..methods.gacn.weights import file_sha256


METHOD_TITLES = {"gacn": "GACN", "sesf": "SESF-Fuse", "wavelet": "Laplacian pyramid", "rpsnn": "R-PSNN"}


def provenance(model: Any, strategy: str, frames: int, reduce: int = 1, method: str = "gacn") -> str:
    """One line for the output's description: how the image was made (``model``: the method's weights, None
    for a method without weights)."""
    title = METHOD_TITLES.get(method, method)
    if model is None:
        return f"focusfuse {__version__} ({title} focus stacking): {frames} frames"
    weights = Path(model.source).name if getattr(model, "source", None) else "in-memory weights"
    reduced = f", decision path at 1/{reduce} resolution" if reduce > 1 else ""
    return (f"focusfuse {__version__} ({title} focus stacking): {frames} frames, strategy {strategy}, "
            f"weights {weights}{reduced}")


def weights_id(model: Any) -> dict[str, str | None]:
    if model is not None and getattr(model, "source", None) and Path(model.source).is_file():
        return {"weights": Path(model.source).name, "weights_sha256": file_sha256(model.source)[:16]}
    return {"weights": None, "weights_sha256": None}


def peak_resident_bytes() -> int:
    """Peak resident memory of this process's own memory, in bytes.

    Linux: ``VmHWM`` (the high-water mark of this process's address space). ``getrusage``'s ``ru_maxrss`` is
    not used there: it keeps the peak across ``exec``, so a process started by a large one (a notebook, a
    test runner: ``subprocess`` forks or vforks it from there) reports its parent's resident memory instead
    of its own when that was larger. Elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if platform.system() == "Darwin" else rss * 1024


def peak_memory_mb(device: torch.device) -> dict[str, float | None]:
    """Peak resident memory of this process (and peak CUDA memory since the last reset), in MB."""
    rss = peak_resident_bytes() / 2**20
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"peak_rss_mb": round(rss, 1), "peak_gpu_mb": None if gpu is None else round(gpu, 1)}


__all__ = ["provenance", "weights_id", "peak_memory_mb", "peak_resident_bytes"]
