"""The alignment pass of a fusion: every frame decoded once (and kept for the fusion pass by its source),
registered onto the reference frame by worker threads; the crop window valid in all aligned frames."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..align.estimate import StackAlignment, estimate_alignment, estimate_on_pool
from ..box import Box
from ..errors import InputError
from ..frames.sources import FrameSource
from .sources import OpenedFrames

AlignProgress = Callable[[int, int], None]


class SourceFrames(Sequence):
    """The frames of ``sources`` as a sequence of arrays for the alignment estimate (each ``read()``: decoded
    the first time, from the source's kept pixels after that)."""

    def __init__(self, sources: Sequence[FrameSource]) -> None:
        self.sources = sources

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.sources[i].read()


def estimate_stack_alignment(sources: Sequence[FrameSource], mode: str, *, reference: int | None = None,
                             executor: ThreadPoolExecutor | None = None, read_ahead: int = 1,
                             progress: Callable[[int, int], None] | None = None) -> StackAlignment:
    """How every frame maps onto the reference (default: the middle frame): frames are read, reduced and compared
    on ``executor``'s threads, at most ``read_ahead`` frames past the chain. An estimate that cannot run at all
    (frames of differing size, unusable layout) is an InputError."""
    frames = SourceFrames(sources)
    try:
        if executor is None:
            return estimate_alignment(frames, mode=mode, reference=reference, progress=progress, workers=1)
        return estimate_on_pool(frames, executor, read_ahead, mode=mode, reference=reference, progress=progress)
    except ValueError as exc:
        raise InputError(f"alignment: {exc}") from exc


def crop_window(alignment: StackAlignment) -> Box:
    """The area valid in all aligned frames; an error when they share none."""
    x0, y0, x1, y1 = alignment.valid_box()
    if x1 <= x0 or y1 <= y0:
        raise InputError("cropping: the aligned frames share no common area (fuse them without cropping)")
    return Box(y0, y1, x0, x1)


@dataclass
class Aligned:
    """The alignment pass's result: the alignment, the frames left out (messages) and the input indices used."""

    alignment: StackAlignment
    skipped: list[str]
    used: list[int]


def align_frames(frames: OpenedFrames, mode: str, *, reference: int | None = None,
                 executor: ThreadPoolExecutor | None = None, read_ahead: int = 0, require: bool = False,
                 progress: AlignProgress | None = None, minimum: int = 2) -> Aligned:
    """Register every frame onto the reference; each is decoded once and its pixels kept for the next pass.

    ``require``: a frame that cannot be aligned is an error; otherwise it is left out with a warning.
    Fewer than ``minimum`` frames aligned is an error.
    """
    for source in frames.sources:
        source.expect_reads(many=True)
    alignment = estimate_stack_alignment(frames.sources, mode, reference=reference, executor=executor,
                                         read_ahead=read_ahead, progress=progress)
    # the alignment counts frames from 0; messages name them as the user gave them (a file, or "frame N" from 1)
    skipped = [_named(frame.message, i, frames.sources[i].name) for i, frame in enumerate(alignment.frames)
               if not frame.ok]
    if skipped and require:
        raise InputError(f"alignment failed: {skipped[0]} (fuse the frames without alignment)")
    for message in skipped:
        warnings.warn(f"{message}; frame left out", stacklevel=4)
    used = [i for i, frame in enumerate(alignment.frames) if frame.ok]
    if len(used) < minimum:  # frames the alignment left out: a processing failure, not a usage error
        raise InputError(f"need at least {minimum} frames, {len(used)} of {len(alignment.frames)} frames could be "
                         "used (alignment failed)")
    return Aligned(alignment, skipped, used)


def _named(message: str, index: int, name: str) -> str:
    """An alignment message about frame ``index`` (counted from 0) with the frame's own name instead."""
    prefix = f"frame {index}:"
    return f"{name}:{message[len(prefix):]}" if message.startswith(prefix) else f"{name}: {message}"



__all__ = ["estimate_stack_alignment", "crop_window", "align_frames", "Aligned", "SourceFrames"]
