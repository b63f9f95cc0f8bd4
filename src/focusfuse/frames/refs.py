"""Frames as the fusion code sees them: read lazily, checked against the first, put on the device.

A frame is given as an array (HxW or HxWxC, uint8/uint16/float), a path, or a :class:`FrameRef`
(one page of a multi-page TIFF). Frames of one fusion must share their size; gray and colour may mix
(gray is repeated to RGB), with a warning; bit depths may not mix.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ..ops.color import normalize_layout
from ..errors import InputError, UsageError
from ..io.images import FrameRef, expand_inputs

FrameLike = Union[np.ndarray, str, os.PathLike, FrameRef]

_DEPTH_NAME = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit", np.dtype(np.float32): "32-bit float"}


def is_stack_array(array: np.ndarray) -> bool:
    """Whether an array holds several frames: (Z, Y, X, C), or (Z, Y, X) with X > 4 (HxWxC images have C <= 4)."""
    return array.ndim == 4 or (array.ndim == 3 and array.shape[2] > 4)


def frame_refs(frames: FrameLike | Sequence[FrameLike]) -> list[np.ndarray | FrameRef]:
    """Expand paths (folders, multi-page TIFFs) and stack arrays (Z, Y, X[, C]) into frame references."""
    if isinstance(frames, (str, os.PathLike, np.ndarray, FrameRef)):
        frames = [frames]
    if not isinstance(frames, Iterable):
        raise UsageError(f"frames: paths or numpy arrays, not {type(frames).__name__}")
    frames = list(frames)
    refs: list[np.ndarray | FrameRef] = []
    for number, item in enumerate(frames, start=1):
        if not isinstance(item, (str, os.PathLike, np.ndarray, FrameRef)):
            raise UsageError(f"frame {number}: a path or a numpy array, not {type(item).__name__}")
        if isinstance(item, np.ndarray) and item.ndim > 4:
            raise UsageError(f"an array of shape {item.shape}: give frames as (Y, X[, C]) arrays or a stack as one "
                             "(Z, Y, X[, C]) array")
        if isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[2] > 4 and len(frames) > 1:
            raise UsageError(f"frame {number}: shape {item.shape}: a frame is (Y, X) or (Y, X, C) with 1, 3 or 4 "
                             "channels (give a stack as one (Z, Y, X[, C]) array)")
        if isinstance(item, np.ndarray) and is_stack_array(item):
            refs.extend(item[z] for z in range(item.shape[0]))
        elif isinstance(item, (np.ndarray, FrameRef)):
            refs.append(item)
        else:
            refs.extend(expand_inputs([item]))
    seen: set[tuple[Path, int | None]] = set()
    for ref in refs:
        if isinstance(ref, FrameRef):
            key = (ref.path.resolve(), ref.page)
            if key in seen:
                raise UsageError(f"{ref.path}: the same frame is given twice"
                                 + (f" (page {ref.page})" if ref.page is not None else ""))
            seen.add(key)
    return refs


def frame_name(ref: np.ndarray | FrameRef, index: int) -> str:
    return ref.name if isinstance(ref, FrameRef) else f"frame {index + 1}"


def working_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """The dtype a frame is fused in: uint8, uint16 or float32 (float64/float16 -> float32, bool -> uint8)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype == bool:
        return np.dtype(np.uint8)
    if dtype not in _DEPTH_NAME:
        raise InputError(f"{name}: unsupported pixel type {dtype} (use uint8, uint16 or float)")
    return dtype


def clean_pixels(image: np.ndarray, name: str) -> np.ndarray:
    """Pixels ready to fuse: working dtype, finite, HxW or HxWx3 (alpha dropped with a warning)."""
    dtype = working_dtype(image.dtype, name)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != dtype:
        image = image.astype(dtype)
    if dtype.kind == "f":
        if not np.isfinite(image).all():
            raise InputError(f"{name}: image contains NaN or infinite values")
        if image.size and (image.min() < 0.0 or image.max() > 1.0):
            warnings.warn(f"{name}: float pixel values outside [0, 1] are clipped (scale float images to 0..1)",
                          stacklevel=2)
    try:
        return normalize_layout(image)
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from exc


def read_frame(ref: np.ndarray | FrameRef) -> np.ndarray:
    """The frame's pixels (see :func:`clean_pixels`)."""
    image = ref.read() if isinstance(ref, FrameRef) else np.asarray(ref)
    return clean_pixels(image, ref.name if isinstance(ref, FrameRef) else "array")


@dataclass
class FrameChecker:
    """Checks each frame against the first: same size and bit depth; tracks colour."""

    shape: tuple[int, int] | None = None
    dtype: np.dtype | None = None
    channels: int = 0
    warned: set[str] = field(default_factory=set)

    def check_info(self, size: tuple[int, int], dtype: np.dtype, channels: int, name: str) -> None:
        """Check a frame's size, dtype and channel count (known before decoding it) against the first."""
        size = tuple(size)
        dtype = np.dtype(dtype)
        if self.shape is None:
            self.shape, self.dtype, self.channels = size, dtype, channels
            return
        if size != self.shape:
            raise InputError(f"{name}: size {size[1]}x{size[0]} differs from the first frame's "
                             f"{self.shape[1]}x{self.shape[0]} (frames must be the same size)")
        if dtype != self.dtype:
            raise InputError(f"{name}: {_DEPTH_NAME[dtype]} frame among {_DEPTH_NAME[self.dtype]} frames "
                             "(frames must share one bit depth; convert them first)")
        if channels != self.channels:
            self._warn_once("channels", f"{name}: mixing gray and colour frames; gray is used as RGB")
            self.channels = max(self.channels, channels)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, stacklevel=3)


def match_channels(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat a 1-channel (C, H, W) tensor to the other's channel count."""
    if a.shape[-3] == b.shape[-3]:
        return a, b
    if a.shape[-3] == 1:
        return a.expand_as(b).contiguous(), b
    return a, b.expand_as(a).contiguous()


def require_frames(refs: Sequence, reason: str | None = None, minimum: int = 2) -> None:
    """At least two frames to fuse; ``reason`` explains a shortfall (e.g. frames left out)."""
    if len(refs) < minimum:
        raise UsageError(f"need at least {minimum} frames, " + (reason or f"got {len(refs)}"))


def input_paths(refs: Sequence[np.ndarray | FrameRef]) -> list[Path]:
    return [r.path for r in refs if isinstance(r, FrameRef)]
