"""A whole stack job, files in -> files out: what ``focusfuse stack`` and ``focusfuse batch`` run.

read -> (align) -> fuse (features, decide, combine) -> write fused image, depth/index map, height map,
preview; plus a report (frames, size, device, time, peak memory, strategy, weights) for logs and batch
sidecars. Outputs are checked before any work and written atomically.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..backends.select import select_backend
from ..engine.fuse import run_stack_fusion, stack_result
from ..engine.options import FusionOptions, check_int
from ..errors import UsageError
from ..frames.refs import frame_refs, input_paths, require_frames
from ..io.images import FrameRef, check_compression, write_image
from ..io.metadata import ImageMetadata, embed_exif_in_tiff, read_metadata
from ..methods import WITHOUT_MAPS
from ..methods.base import FusionMethod
from .depth import (MAX_DEPTH_SMOOTH, checked_z_step, depth_preview, height_map, smooth_index_map,
                    z_spacing_of_inputs)
from .outputs import JobOutput, check_map_formats, check_outputs, is_tiff, staged_outputs, write_all, write_map
from .report import peak_memory_mb, provenance, weights_id

Progress = Callable[[int, int, str], None]


@dataclass
class StackJob:
    """What to fuse (``options``, validated when they were made) and which files to write."""

    inputs: Sequence[Any]
    output: Path
    options: FusionOptions = field(default_factory=FusionOptions)
    index_map: Path | None = None
    depth_preview: Path | None = None
    depth_smooth: int = 0
    height_map: Path | None = None
    z_step: float | None = None
    z_unit: str = ""
    compression: str | None = None
    overwrite: bool = False

    def outputs(self) -> list[Path]:
        return [p for p in (self.output, self.index_map, self.depth_preview, self.height_map) if p is not None]


def check_job_settings(job: StackJob) -> None:
    """The job's own settings (not its files): map outputs the method has, depth smoothing radius, focus step."""
    maps = [p for p in (job.index_map, job.depth_preview, job.height_map) if p is not None]
    if maps and job.options.method in WITHOUT_MAPS:
        raise UsageError(f"the {job.options.method} method regresses pixels: it has no index map to write "
                         f"({maps[0].name})", option="index_map")
    check_int(job.depth_smooth, "depth smoothing radius", 0, MAX_DEPTH_SMOOTH, option="depth_smooth")
    check_compression(job.compression)
    if job.z_step is not None:
        checked_z_step(job.z_step)


def check_stack_job(job: StackJob, refs: Sequence[FrameRef | np.ndarray]) -> tuple[float | None, str]:
    """Everything about a stack job that can be refused before any work; returns its z step and unit
    (``job.z_step``, else the z spacing of a TIFF stack's metadata)."""
    check_job_settings(job)
    require_frames(refs)
    paths = input_paths(refs)
    check_outputs(job.outputs(), job.overwrite, paths)
    check_map_formats(job.index_map, height=job.height_map)
    z_step, unit = job.z_step, job.z_unit
    if z_step is None:
        z_step, unit = z_spacing_of_inputs(paths) or (None, unit)
    if job.height_map is not None and z_step is None:
        raise UsageError("a height map needs the focus step between frames (or a TIFF stack with z spacing in "
                         "its metadata)", option="z_step")
    return z_step, unit


def run_stack(job: StackJob, model: Any, *, device: str | torch.device = "auto",
              progress: Progress | None = None, align_progress: Callable[[int, int], None] | None = None,
              method: FusionMethod | None = None, client: Any = None) -> dict[str, Any]:
    """Fuse ``job`` with ``model`` (the method's weights, GACN's, SESF-Fuse's or R-PSNN's, on their device; None for a
    method without weights, run on ``device``) and write its outputs (all or none); returns the report.
    ``method`` replaces the job's method (the report still names ``model``'s weights). ``client``: a Dask
    client whose workers fuse the tiles of a tiled run (see :func:`focusfuse.fuse_stack`)."""
    refs = frame_refs(list(job.inputs))
    z_step, unit = check_stack_job(job, refs)
    options = job.options
    device = model.device if model is not None else select_backend(device).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reference = refs[len(refs) // 2]
    metadata = read_metadata(reference.path) if isinstance(reference, FrameRef) else ImageMetadata()
    metadata = dataclasses.replace(metadata, description=provenance(model, options.strategy, len(refs),
                                                                    options.reduce, options.method))
    stream_index = is_tiff(job.index_map) and job.depth_smooth == 0
    keep_index = (job.index_map is not None and not stream_index) or job.depth_preview is not None \
        or job.height_map is not None
    start = time.perf_counter()
    with staged_outputs() as staged:
        output = JobOutput(job.output, staged, metadata, compression=job.compression,
                           index_path=job.index_map if stream_index else None, keep_index=keep_index)
        run = run_stack_fusion(refs, options, weights=model, device=select_backend(device), progress=progress,
                               align_progress=align_progress, output=output, method=method, client=client)
        result = stack_result(run, options)
        index = None if result.index_map is None else smooth_index_map(result.index_map, job.depth_smooth)
        writes: list[Callable[[], object]] = []
        if job.output in output.streamed:
            writes.append(lambda: embed_exif_in_tiff(staged.path(job.output), metadata))
        else:
            writes.append(lambda: write_image(staged.path(job.output), result.fused, metadata=metadata,
                                              compression=job.compression))
        if job.index_map is not None and job.index_map not in output.streamed:
            writes.append(lambda: write_map(staged.path(job.index_map), index, "index"))
        if job.depth_preview is not None:
            writes.append(lambda: write_image(staged.path(job.depth_preview),
                                              depth_preview(index, len(refs), z_step, unit)))
        if job.height_map is not None:
            writes.append(lambda: write_image(staged.path(job.height_map), height_map(index, z_step),
                                              compression=job.compression))
        write_all(writes)
    h, w = result.shape
    return {
        "output": str(job.output), "inputs": len(refs), "frames_used": len(result.frames),
        "skipped": result.skipped, "width": w, "height": h, "method": options.method,
        "strategy": options.strategy, "align": options.align,
        "reduce": options.reduce, "edge_fill": options.edge_fill, "tiles": result.tiles,
        "crop_box": list(result.box) if result.box else None, "device": str(device),
        "seconds": round(time.perf_counter() - start, 3), **peak_memory_mb(device), **weights_id(model),
        "z_step": z_step, "z_unit": unit or None, "focusfuse": __version__,
    }


__all__ = ["StackJob", "check_job_settings", "check_stack_job", "run_stack"]
