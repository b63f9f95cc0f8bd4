"""A fusion's frames: opened and probed (nothing decoded), and the view the fusion reads of each (registered,
cropped, its edge fill found)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np

from ..align.estimate import FrameAlignment, StackAlignment
from ..box import Box
from ..frames.refs import FrameChecker, frame_name
from ..frames.sources import (ArraySource, CroppedSource, FileSource, FillAwareSource, FrameSource, OpenTiffs,
                              WarpedSource)
from ..io.images import FrameRef


def is_identity(alignment: FrameAlignment) -> bool:
    """Whether a frame's alignment changes nothing (it is then read as it is)."""
    return np.array_equal(alignment.transform, np.eye(3)) and alignment.gain == 1.0 and alignment.offset == 0.0


def open_source(ref: np.ndarray | FrameRef, index: int, cache_dir: str, tiffs: OpenTiffs) -> FrameSource:
    """The frame behind ``ref`` (a file or an array), probed but not yet decoded."""
    name = frame_name(ref, index)
    return FileSource(ref, name, cache_dir, tiffs) if isinstance(ref, FrameRef) else ArraySource(ref, name)


def prepared_source(source: FrameSource, alignment: StackAlignment | None, index: int, window: Box | None,
                    edge_fill: bool) -> FrameSource:
    """The source as the fusion reads it: registered, cropped to ``window``, its edge fill found."""
    if alignment is not None and not is_identity(alignment.frames[index]):
        source = WarpedSource(source, alignment.frames[index], alignment.shape)
    if window is not None:
        source = CroppedSource(source, window)
    return FillAwareSource(source) if edge_fill else source


def decode_bytes(sources: Sequence[FrameSource]) -> int:
    """Bytes of the largest frame that is decoded whole before it can be read by region."""
    sizes = [s.info.shape[0] * s.info.shape[1] * s.info.channels * s.info.dtype.itemsize
             for s in sources if isinstance(s, FileSource) and s.decodes_whole]
    return max(sizes, default=0)


@dataclass
class OpenedFrames:
    """The frames of a fusion, probed (size, channels, bit depth checked against the first) but not decoded."""

    sources: list[FrameSource]
    shape: tuple[int, int]
    channels: int
    dtype: np.dtype


@contextmanager
def opened_frames(refs: Sequence[np.ndarray | FrameRef]) -> Iterator[OpenedFrames]:
    """Open every frame (files are probed, not decoded); temporary files are removed at the end."""
    with ExitStack() as stack:
        cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="focusfuse-"))
        tiffs = OpenTiffs()
        stack.callback(tiffs.close)
        sources: list[FrameSource] = []
        stack.callback(lambda: [source.close() for source in sources])
        for i, ref in enumerate(refs):
            sources.append(open_source(ref, i, cache, tiffs))
        checker = FrameChecker()
        for source in sources:
            checker.check_info(source.info.shape, source.info.dtype, source.info.channels, source.name)
        yield OpenedFrames(sources, checker.shape, checker.channels, checker.dtype)


__all__ = ["OpenedFrames", "opened_frames", "open_source", "prepared_source", "decode_bytes", "is_identity"]
