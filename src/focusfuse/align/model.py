"""The alignment results: per-frame transforms and exposure, and the whole stack's alignment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .valid_box import valid_box

MODES = ("auto", "none", "translation", "affine", "homography")


@dataclass
class FrameAlignment:
    """How one frame maps onto the reference frame.

    ``transform`` (3x3 float64) maps this frame's full-resolution pixel coordinates to the reference
    frame's. ``gain``/``offset`` match its brightness to the reference: ``corrected = gain * frame +
    offset`` on the frame's 0..1 scale. ``ok`` is False when this frame could not be aligned to any
    neighbour nor to a similar-focus partner (unusable frame, ECC failure, low correlation,
    implausible step); then its step counts as identity: ``transform``/``gain``/``offset`` are copied
    from the chained neighbour, the nearest earlier frame that aligned (for a bad first frame, the
    frame after it; identity and unit gain when no frame aligned at all), and ``message`` says why.
    Fusion should normally leave such frames out: a copied transform is only a guess.

    ``message`` is empty for every frame with ``ok=True``. ``note`` is informational and never
    marks a failure: a frame whose neighbour step failed but that was then aligned through a
    similar-focus partner says so there (``"frame 1: aligned via frame 46 (...)"``).
    """

    transform: np.ndarray
    gain: float = 1.0
    offset: float = 0.0
    ok: bool = True
    message: str = ""
    note: str = ""


@dataclass
class StackAlignment:
    """The alignment of a whole bracket onto frame ``reference``; ``shape`` is the frames' (H, W)."""

    reference: int
    frames: list[FrameAlignment]
    shape: tuple[int, int]

    def valid_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), x1/y1 exclusive: the largest box of reference pixels inside every warped frame.

        Frames whose alignment failed (left out of the fusion) do not count. (0, 0, 0, 0) when the
        warped frames share no region.
        """
        return valid_box([frame.transform for frame in self.frames if frame.ok], self.shape)

    def failures(self) -> list[str]:
        """One message per frame whose alignment failed (empty when all frames aligned)."""
        return [frame.message for frame in self.frames if not frame.ok]

    def notes(self) -> list[str]:
        """The informational notes (e.g. frames aligned through a partner), in frame order."""
        return [frame.note for frame in self.frames if frame.note]


def check_mode(mode: str) -> None:
    """Raise ValueError for a mode that is not in MODES."""
    if mode not in MODES:
        raise ValueError(f"unknown alignment mode {mode!r}: use one of {', '.join(MODES)}")


def identity_alignment(count: int, shape: tuple[int, int], reference: int) -> StackAlignment:
    """Identity transforms and unit gain for ``count`` frames."""
    return StackAlignment(reference, [FrameAlignment(np.eye(3)) for _ in range(count)], shape)


def pick_reference(reference: int | None, count: int) -> int:
    """The reference index (default: the middle frame); ValueError when out of range."""
    if count == 0:
        raise ValueError("no frames to align")
    chosen = count // 2 if reference is None else reference
    if not 0 <= chosen < count:
        raise ValueError(f"reference frame {reference} out of range for {count} frames")
    return chosen
