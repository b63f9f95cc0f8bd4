"""The CPU backend: banded single-output convolutions, shifted few-channel filters, glibc's malloc kept warm."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..ops.filters import check_taps
from .base import Backend
from .cpu_kernels import SHIFTED_MAX_CHANNELS, conv_to_one_channel, shifted_separable_filter
from .malloc import free_heap_bytes, keep_freed_memory, release_free_memory


KEEP_WARM_MAX = 1 << 30  # freed memory kept after a run for the next one, at most


class CpuBackend(Backend):
    """Inference on the CPU (oneDNN convolutions; its slow cases replaced by :mod:`.cpu_kernels`).

    Memory: measured with freed memory kept for reuse (:func:`.malloc.keep_freed_memory`, applied for the
    length of a run): 2350 B per pixel for a pair (1500x1500, in memory), 1730 B for a stack step (V-4);
    without it 1340 B (pair). ``--reduce`` lowers it little (the full-resolution features dominate).
    """

    name = "cpu"
    network_on_host = True  # V-4, 12 frames on 2 cores: 18.4 s with frames prepared in line, 21.7 s with 1-2 workers
    bytes_per_pixel = 2400

    def single_output_conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        out = conv_to_one_channel(x, conv.weight)
        return out if conv.bias is None else out.add_(conv.bias.view(1, 1, 1, 1))

    def separable_filter(self, x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > SHIFTED_MAX_CHANNELS:
            return super().separable_filter(x, taps)
        check_taps(taps)
        return shifted_separable_filter(x, taps)

    def release_memory(self) -> None:
        release_free_memory()

    def reusable_memory(self) -> int:
        return free_heap_bytes()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Inference mode, with glibc keeping freed memory for reuse (fresh pages cost page faults: a
        1600x1200 stack step 3.4 s -> 2.3 s on 2 cores). The setting is process-wide. Up to
        ``KEEP_WARM_MAX`` of what a run freed stays for the next run in the process (a second 520x520
        pair: 0.54 s -> 0.30 s); more is handed back at the end (:func:`.malloc.release_free_memory`)."""
        keep_freed_memory()
        try:
            with torch.inference_mode():
                yield
        finally:
            if free_heap_bytes() > KEEP_WARM_MAX:
                release_free_memory()
