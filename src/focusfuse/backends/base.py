"""The backend protocol and its device-independent defaults: inference kernels, memory model, transfers.

A backend is the one place that knows which device the network runs on. The fusion methods call its
kernels (a conv block with its BatchNorm, a single-output convolution, a separable filter, the gradient
energy) instead of torch's modules, so a device's speed tricks live in its backend (:mod:`.cpu`,
:mod:`.cuda`) and the methods read like the math. The engine asks it how much memory a pixel costs,
how many frames to run at once, and how to hand frames over (:meth:`Backend.stage` in a worker thread,
:meth:`Backend.upload` where the network runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ..ops.color import to_tensor
from ..ops.filters import separable_filter

GIB = 1 << 30


class Backend:
    """Plain torch inference kernels on any device; subclasses override what pays on theirs.

    Parameters
    ----------
    device : torch.device
        Where tensors live and the network runs.
    decision_dtype : torch.dtype
        Precision of the decision path (float32, or bfloat16 where a backend's parity check allows it);
        features and their spatial frequency always run in float32 (the activity multiplies spatial
        frequency differences by 1000, so their round-off decides).
    """

    name = "generic"
    # Whether the network's arithmetic runs on the host's cores (then frames are prepared in the network's
    # thread: worker threads beside it only contend for the same cores).
    network_on_host = False
    # Peak working memory per pixel of a fused region (float32 network, one frame at a time), bytes.
    bytes_per_pixel = 2400
    # Largest budget a run takes by default: main memory is shared with everything else.
    default_budget_cap = 8 * GIB
    # Host memory the runtime takes beyond what a run's plan sees when it starts (library caches, thread
    # arenas): measured on CPU runs under a memory limit, 90-130 MiB, plus the boundary blend's refiner blocks
    # (some 30 MB); the rest is margin. (The 1 GiB test's 1024-1029 MiB "peaks" that raised it were the test
    # runner's own memory, which getrusage carries into the child it starts: see jobs/report.py.)
    runtime_reserve = 224 << 20

    def __init__(self, device: torch.device, *, decision_dtype: torch.dtype = torch.float32) -> None:
        self.device = device
        self.decision_dtype = decision_dtype

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.device}, decision {str(self.decision_dtype).removeprefix('torch.')})"

    # ------------------------------------------------------------------------------------- kernels

    def conv_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """conv -> ReLU -> BatchNorm of a ``ConvBlock`` in inference: the BatchNorm as an in-place affine map."""
        scale, shift = block.bn_scale_shift()
        z = self.single_output_conv(block.conv, x) if block.conv.out_channels == 1 else block.conv(x)
        return z.relu_().mul_(scale[:, None, None]).add_(shift[:, None, None])

    def single_output_conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """``conv(x)`` for a convolution with one output channel (the SSE gates, the last decision block)."""
        return conv(x)

    def separable_filter(self, x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        """Zero-padded separable correlation of every channel with ``taps`` (:func:`ops.filters.separable_filter`)."""
        return separable_filter(x, taps)

    def gradient_energy(self, x: torch.Tensor) -> torch.Tensor:
        """(f(y,x-1)-f(y,x))^2 + (f(y-1,x)-f(y,x))^2, zero outside, written in place in ``x``'s memory format."""
        across, down = torch.empty_like(x), torch.empty_like(x)
        across[..., :, 0] = x[..., :, 0]  # the neighbour outside the image is 0
        torch.sub(x[..., :, 1:], x[..., :, :-1], out=across[..., :, 1:])
        down[..., 0, :] = x[..., 0, :]
        torch.sub(x[..., 1:, :], x[..., :-1, :], out=down[..., 1:, :])
        return across.square_().add_(down.square_())

    @contextlib.contextmanager
    def decision_precision(self) -> Iterator[None]:
        """The precision the decision path runs in (autocast to ``decision_dtype`` unless float32)."""
        if self.decision_dtype == torch.float32:
            yield
        else:
            with torch.autocast(device_type=self.device.type, dtype=self.decision_dtype):
                yield

    # -------------------------------------------------------------------------------------- memory

    def host_budget(self, limit: int | None, resident: int) -> int:
        """Bytes of main memory a run may use in all (its process's peak resident memory): ``limit``, else
        what the process holds (``resident``) plus half the memory available, at most ``default_budget_cap``."""
        if limit is not None:
            return int(limit)
        return min(resident + host_available_memory() // 2, self.default_budget_cap)

    def device_budget(self) -> int | None:
        """Bytes of the device's own memory the network may use (None: the network runs in main memory)."""
        return None

    def reusable_memory(self) -> int:
        """Bytes of this process's resident memory that are free for reuse (kept by the allocator)."""
        return 0

    def frames_per_batch(self, pixels: int, budget: int) -> int:
        """How many frames of ``pixels`` the network takes at once within ``budget`` bytes (1: one by one)."""
        return 1

    def release_memory(self) -> None:
        """Hand memory freed by the last tile back (tiles of other shapes would fragment it)."""

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Settings for the length of one fusion run (inference mode, and whatever the device needs)."""
        with torch.inference_mode():
            yield

    # ----------------------------------------------------------------------------------- transfers

    def stage(self, pixels: np.ndarray) -> torch.Tensor:
        """Host side of a frame hand-over, run in a worker thread: the pixels ready for :meth:`upload`."""
        return to_tensor(pixels, "cpu")

    def upload(self, staged: torch.Tensor) -> torch.Tensor:
        """A staged frame as a float32 (C, H, W) tensor in [0, 1] on the device."""
        return staged.to(self.device)

    def synchronize(self) -> None:
        """Wait for the device's queued work (for timing)."""


def host_available_memory() -> int:
    """Bytes of main memory available (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * GIB
