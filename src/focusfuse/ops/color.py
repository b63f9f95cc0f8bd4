"""Gray and dtype conversions: caller's arrays <-> float32 tensors in [0, 1].

Colour frames are RGB. The network sees gray = 0.2125 R + 0.7154 G + 0.0721 B (the GACN code's
coefficients); the fused image keeps every channel (Eq. 4 is applied per channel).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)


def normalize_layout(image: np.ndarray) -> np.ndarray:
    """Return HxW (gray) or HxWx3 (RGB); alpha channels are dropped with a warning."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (2, 4):
        warnings.warn("dropping the alpha channel of frames that have one (transparency is not used)", stacklevel=3)
        image = image[:, :, 0] if image.shape[2] == 2 else image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"unsupported image shape {image.shape}: expected HxW, HxWx3 or HxWx4")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    return image


def dtype_scale(dtype: np.dtype) -> float:
    """Value that maps to 1.0: 255 for uint8, 65535 for uint16, 1 for floats."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if dtype.kind == "f":
        return 1.0
    if dtype == bool:
        return 1.0
    raise ValueError(f"unsupported pixel type {dtype}: use uint8, uint16 or float")


def to_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """HxW or HxWxC array (any supported dtype) -> float32 tensor (C, H, W) in [0, 1]."""
    image = normalize_layout(np.asarray(image))
    scale = dtype_scale(image.dtype)
    array = np.ascontiguousarray(image)
    if not array.flags.writeable:  # torch must not share read-only memory (a PIL image's array): convert it here,
        array = array.astype(np.float32)  # the one copy the conversion below would have made
    t = torch.from_numpy(array).to(device)
    t = t.to(torch.float32)
    if scale != 1.0:
        t = t / scale
    if t.ndim == 2:
        return t.unsqueeze(0)
    return t.permute(2, 0, 1).contiguous()


def to_gray(frame: torch.Tensor) -> torch.Tensor:
    """(C, H, W) or (B, C, H, W) in [0, 1] -> gray with the channel axis kept (1 channel)."""
    channel_axis = frame.ndim - 3
    if frame.shape[channel_axis] == 1:
        return frame
    r, g, b = frame.unbind(channel_axis)
    wr, wg, wb = GRAY_WEIGHTS
    return (wr * r + wg * g + wb * b).unsqueeze(channel_axis)


def from_tensor(frame: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """(C, H, W) float tensor in [0, 1] -> HxW or HxWxC array of ``dtype`` (rounded, clipped)."""
    dtype = np.dtype(dtype)
    x = frame.detach().float().clamp(0.0, 1.0)
    x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
    scale = dtype_scale(dtype)
    if dtype.kind == "f":
        return x.cpu().numpy().astype(dtype, copy=False)
    return torch.round(x * scale).cpu().numpy().astype(dtype)
