"""Align only: register a stack's frames onto the middle one and write them, one file per frame."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.options import FusionOptions
from ..backends.base import Backend
from ..engine.plan import default_workers, resident_memory
from ..engine.prefetch import prefetched
from ..engine.alignment import align_frames, crop_window
from ..engine.sources import OpenedFrames, opened_frames, prepared_source
from ..errors import UsageError
from ..frames.refs import frame_refs, input_paths, require_frames
from ..io.images import WRITE_SUFFIXES, FrameRef, natural_key, write_image
from ..io.metadata import read_metadata
from .outputs import check_outputs

Progress = Callable[[int, int, str], None]


def aligned_frame_name(ref: Any, i: int) -> str:
    """File name for a registered frame: the input's name (and format, if writable), or frame_NNNN.tif."""
    if not isinstance(ref, FrameRef):
        return f"frame_{i:04d}.tif"
    stem = ref.path.stem if ref.page is None else f"{ref.path.stem}_z{ref.page:04d}"
    writable = ref.path.suffix.lower() in WRITE_SUFFIXES
    return stem + (ref.path.suffix if writable else ".tif")


def frames_in_flight(opened: OpenedFrames, workers: int, memory_limit: int | None) -> int:
    """Whole frames read, warped and written at a time within the memory budget (each held about three times:
    decoded, warped, encoded)."""
    backend = Backend(torch.device("cpu"))
    resident = resident_memory()
    left = backend.host_budget(memory_limit, resident) - resident - backend.runtime_reserve
    frame = opened.shape[0] * opened.shape[1] * opened.channels * opened.dtype.itemsize * 3
    return max(1, min(max(workers, 1), left // max(frame, 1)))


def write_aligned_frames(inputs: Sequence[Any], out_dir: Path, *, mode: str = "auto", crop: bool = False,
                         overwrite: bool = False, workers: int | None = None, memory_limit: int | str | None = None,
                         progress: Progress | None = None,
                         align_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Register the frames onto the middle one and write those that aligned to ``out_dir`` (each frame decoded
    once; ``memory_limit`` bounds how many are in flight at a time)."""
    if mode == "none":
        raise UsageError("writing aligned frames needs an alignment mode (auto, translation, affine, homography)",
                         option="align")
    options = FusionOptions(align=mode, crop=crop, workers=workers, memory_limit=memory_limit)
    refs = frame_refs(list(inputs))
    require_frames(refs)
    targets = [out_dir / aligned_frame_name(ref, i) for i, ref in enumerate(refs)]
    clashing = sorted({t.name for t in targets if targets.count(t) > 1}, key=natural_key)
    if clashing:
        raise UsageError(f"frames from different folders would be written as the same file in {out_dir}: "
                         f"{', '.join(clashing)}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: not a folder")
    if out_dir.exists():
        check_outputs(targets, overwrite, input_paths(refs))
    elif not out_dir.parent.exists():
        raise UsageError(f"{out_dir.parent}: output folder does not exist")
    workers = default_workers() if options.workers is None else options.workers
    with opened_frames(refs) as opened, ThreadPoolExecutor(max(workers, 1)) as executor:
        threads = frames_in_flight(opened, workers, options.memory_limit)
        aligned = align_frames(opened, options.align, executor=executor, read_ahead=threads,
                               progress=align_progress, minimum=1)
        window = crop_window(aligned.alignment) if crop else None
        out_dir.mkdir(exist_ok=True)

        def write(i: int) -> str:
            source = prepared_source(opened.sources[i], aligned.alignment, i, window, edge_fill=False)
            metadata = read_metadata(refs[i].path) if isinstance(refs[i], FrameRef) else None
            write_image(targets[i], np.ascontiguousarray(source.read()), metadata=metadata)
            return source.name

        written = []
        for done, (i, name) in enumerate(zip(aligned.used, prefetched(aligned.used, write, executor, threads)), 1):
            written.append(str(targets[i]))
            if progress is not None:
                progress(done, len(aligned.used), name)
    box = None if window is None else [window.x0, window.y0, window.x1, window.y1]
    return {"aligned": written, "skipped": aligned.skipped, "crop_box": box}


__all__ = ["write_aligned_frames", "aligned_frame_name"]
