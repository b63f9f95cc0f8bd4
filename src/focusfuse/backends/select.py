"""Pick the device (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and the backend that runs on it."""

from __future__ import annotations

import torch

from ..errors import UsageError
from .base import Backend


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Validate and return a torch device; a clear error when CUDA is asked for but absent."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r}: CUDA is not available on this machine (use the CPU)")
        suffix = name.split(":", 1)[1] if ":" in name else "0"
        if not suffix.isdigit():
            raise UsageError(f"device {device!r}: use auto, cpu, cuda or cuda:N")
        index = int(suffix)
        if index >= torch.cuda.device_count():
            raise UsageError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)
    raise UsageError(f"device {device!r}: use auto, cpu, cuda or cuda:N")


def select_backend(device: str | torch.device | Backend = "auto") -> Backend:
    """The backend for ``device`` (a backend passes through unchanged)."""
    if isinstance(device, Backend):
        return device
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        from .cuda import CudaBackend

        return CudaBackend(resolved)
    if resolved.type == "cpu":
        from .cpu import CpuBackend

        return CpuBackend(resolved)
    return Backend(resolved)  # another torch device (mps, xpu...): plain kernels
