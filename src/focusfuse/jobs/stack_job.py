"""A whole stack job, files in -> files out: what ``focusfuse stack`` and ``focusfuse batch`` run.

read -> (align) -> fuse (features, decide, combine) -> write fused image, depth/index map, height map,
preview; plus a report (frames, size, device, time, peak memory, strategy, weights) for logs and batch
sidecars. Outputs are checked before any work and written atomically.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..align.estimate import crop_to_box, warp_frame
from ..methods.gacn.decision import check_reduce
from .depth import depth_preview, height_map, smooth_index_map, z_spacing_of_inputs
from ..errors import FocusFuseError, InputError, UsageError
from ..frames.refs import frame_name, frame_refs, input_paths, read_frame, require_frames
from ..io.images import (EIGHT_BIT_ONLY, TIFF_SUFFIXES, WRITE_SUFFIXES, FrameRef, check_output_file, check_output_path,
                 natural_key, partial_path, write_image)
from ..io.metadata import ImageMetadata, embed_exif_in_tiff, read_metadata, tiff_write_kwargs
from ..io.sinks import ArraySink, TiffSink
from ..methods.gacn.model import GACN
from ..engine.stack import DEFAULT_STRATEGY, PairStack, align_pair, checked_crop_box, estimate_or_fail, fuse_frames, fuse_stack
from ..methods.gacn.weights import file_sha256

Progress = Callable[[int, int, str], None]


@dataclass
class StackJob:
    """What to fuse and which files to write."""

    inputs: Sequence[Any]
    output: Path
    strategy: str = DEFAULT_STRATEGY
    align: str = "auto"
    crop: bool = False
    index_map: Path | None = None
    depth_preview: Path | None = None
    depth_smooth: int = 0
    height_map: Path | None = None
    z_step: float | None = None
    z_unit: str = ""
    tile_size: int | None = None
    reduce: int = 1  # the decision path runs at 1/reduce resolution (speed option)
    edge_fill: bool = True  # keep constant bands along frame edges out of the decisions (see fill.py)
    compression: str | None = None
    overwrite: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def outputs(self) -> list[Path]:
        return [p for p in (self.output, self.index_map, self.depth_preview, self.height_map) if p is not None]


def check_outputs(outputs: Sequence[Path], overwrite: bool, inputs: Sequence[Path], *, images: bool = True) -> None:
    """Refuse duplicate, existing (without overwrite) or unwritable outputs, and outputs equal to inputs
    (``images``: also outputs in a format we cannot write)."""
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise UsageError("two outputs name the same file")
    check = check_output_path if images else check_output_file
    for path in outputs:
        check(path, overwrite=overwrite, inputs=inputs)


def write_map(path: Path, values: np.ndarray, kind: str) -> None:
    """Decision maps as round(p * 65535) (16 bit) or round(p * 255) (8-bit formats); index maps raw."""
    eight_bit = path.suffix.lower() in EIGHT_BIT_ONLY
    if kind == "probability":
        scale = 255.0 if eight_bit else 65535.0
        data = np.round(np.clip(values, 0.0, 1.0) * scale).astype(np.uint8 if eight_bit else np.uint16)
    else:
        if eight_bit and values.max(initial=0) > 255:
            raise UsageError(f"{path}: more than 256 frames need a PNG or TIFF index map")
        data = values.astype(np.uint8 if eight_bit else np.uint16)
    write_image(path, data)


def provenance(model: GACN, strategy: str, frames: int, reduce: int = 1) -> str:
    """One line for the output's description: how the image was made."""
    weights = Path(model.source).name if model.source else "in-memory weights"
    reduced = f", decision path at 1/{reduce} resolution" if reduce > 1 else ""
    return (f"focusfuse {__version__} (GACN focus stacking): {frames} frames, strategy {strategy}, "
            f"weights {weights}{reduced}")


def weights_id(model: GACN) -> dict[str, str | None]:
    if model.source and Path(model.source).is_file():
        return {"weights": Path(model.source).name, "weights_sha256": file_sha256(model.source)[:16]}
    return {"weights": None, "weights_sha256": None}


def peak_memory_mb(device: torch.device) -> dict[str, float | None]:
    """Peak resident memory of this process (and peak CUDA memory since the last reset), in MB."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss = rss_kb / 1024 if platform.system() != "Darwin" else rss_kb / 2**20
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"peak_rss_mb": round(rss, 1), "peak_gpu_mb": None if gpu is None else round(gpu, 1)}


class StagedOutputs:
    """All outputs of a job are written under temporary names and renamed together at the end, so a
    failure anywhere leaves none of them behind."""

    def __init__(self) -> None:
        self.staged: dict[Path, Path] = {}

    def path(self, target: Path) -> Path:
        """The temporary name to write ``target`` under."""
        tmp = partial_path(target)
        self.staged[tmp] = target
        return tmp

    def commit(self) -> None:
        for tmp, target in self.staged.items():
            os.replace(tmp, target)
        self.staged = {}

    def discard(self) -> None:
        for tmp in self.staged:
            if tmp.exists():
                tmp.unlink()
        self.staged = {}

    def renamed_error(self, exc: BaseException) -> FocusFuseError | None:
        """The error ``exc`` naming the output the user asked for instead of its temporary file (None when
        it names none)."""
        for tmp, target in self.staged.items():
            if isinstance(exc, OSError) and exc.filename is not None and Path(exc.filename) == tmp:
                return UsageError(f"{target}: cannot write ({exc.strerror or exc})")
            if isinstance(exc, FocusFuseError) and str(tmp) in str(exc):
                return type(exc)(str(exc).replace(str(tmp), str(target)))
        return None


def _is_tiff(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() in TIFF_SUFFIXES


MAP_SUFFIXES = (".png", ".tif", ".tiff")


def check_map_formats(index_map: Path | None = None, decision_map: Path | None = None,
                      height: Path | None = None) -> None:
    """Maps are data: lossless formats only (index/decision: PNG or TIFF; heights: float32 TIFF)."""
    for path, what in ((index_map, "index/depth map"), (decision_map, "decision map")):
        if path is not None and path.suffix.lower() not in MAP_SUFFIXES:
            raise UsageError(f"{path}: the {what} needs a lossless 16-bit format (.png or .tif)")
    if height is not None and not _is_tiff(height):
        raise UsageError(f"{height}: the height map is float32 data: use .tif")


def check_stack_job(job: StackJob, refs: Sequence[FrameRef | np.ndarray]) -> tuple[float | None, str]:
    """Everything about a stack job that can be refused before any work; returns its z step and unit
    (``job.z_step``, else the z spacing of a TIFF stack's metadata)."""
    check_reduce(job.reduce)
    require_frames(refs)
    paths = input_paths(refs)
    check_outputs(job.outputs(), job.overwrite, paths)
    check_map_formats(job.index_map, height=job.height_map)
    if job.depth_smooth < 0:
        raise UsageError(f"depth smoothing radius {job.depth_smooth}: use 0 (none) or more")
    if job.z_step is not None and not (math.isfinite(job.z_step) and job.z_step != 0):
        raise UsageError(f"--z-step {job.z_step}: the focus step must be a non-zero number")
    z_step, unit = job.z_step, job.z_unit
    if z_step is None:
        z_step, unit = z_spacing_of_inputs(paths) or (None, unit)
    if job.height_map is not None and z_step is None:
        raise UsageError("--height-map needs --z-step (or a TIFF stack with z spacing in its metadata)")
    return z_step, unit


def run_stack(job: StackJob, model: GACN, *, progress: Progress | None = None,
              align_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Fuse ``job`` with ``model`` and write its outputs (all or none); returns the report.

    When the image is processed in tiles and the output is a TIFF, the fused image (and a TIFF index
    map) stream to disk band by band, so memory stays bounded whatever the image size.
    """
    refs = frame_refs(list(job.inputs))
    z_step, unit = check_stack_job(job, refs)
    device = model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reference = refs[len(refs) // 2]
    metadata = read_metadata(reference.path) if isinstance(reference, FrameRef) else ImageMetadata()
    metadata = dataclasses.replace(metadata, description=provenance(model, job.strategy, len(refs), job.reduce))
    staged = StagedOutputs()
    stream_index = _is_tiff(job.index_map) and job.depth_smooth == 0
    keep_index = (job.index_map is not None and not stream_index) or job.depth_preview is not None \
        or job.height_map is not None
    streamed: list[Path] = []

    def sink(height: int, width: int, channels: int, dtype: np.dtype, n_tiles: int):
        if n_tiles == 1 or not _is_tiff(job.output):
            return ArraySink(height, width, channels, dtype)
        streamed.extend([job.output] + ([job.index_map] if stream_index else []))
        return TiffSink(height, width, channels, dtype, staged.path(job.output),
                        index_path=staged.path(job.index_map) if stream_index else None,
                        compression=job.compression, keep_index=keep_index,
                        fused_kwargs=tiff_write_kwargs(metadata, channels=channels))

    start = time.perf_counter()
    try:
        result = fuse_stack(refs, strategy=job.strategy, weights=model, device=device, align=job.align,
                            crop=job.crop, tile_size=job.tile_size, progress=progress, align_progress=align_progress,
                            sink=sink, reduce=job.reduce, edge_fill=job.edge_fill)
        if job.output in streamed:
            embed_exif_in_tiff(staged.path(job.output), metadata)
        else:
            write_image(staged.path(job.output), result.fused, metadata=metadata, compression=job.compression)
        index = None if result.index_map is None else smooth_index_map(result.index_map, job.depth_smooth)
        if job.index_map is not None and job.index_map not in streamed:
            write_map(staged.path(job.index_map), index, "index")
        if job.depth_preview is not None:
            write_image(staged.path(job.depth_preview), depth_preview(index, len(refs), z_step, unit))
        if job.height_map is not None:
            write_image(staged.path(job.height_map), height_map(index, z_step), compression=job.compression)
        staged.commit()
    except (FocusFuseError, OSError) as exc:
        renamed = staged.renamed_error(exc)
        if renamed is None:
            raise
        raise renamed from exc
    finally:
        staged.discard()
    h, w = result.shape
    return {
        "output": str(job.output), "inputs": len(refs), "frames_used": len(result.frames),
        "skipped": result.skipped, "width": w, "height": h, "strategy": job.strategy, "align": job.align,
        "reduce": job.reduce, "edge_fill": job.edge_fill,
        "crop_box": list(result.box) if result.box else None, "device": str(device),
        "seconds": round(time.perf_counter() - start, 3), **peak_memory_mb(device), **weights_id(model),
        "z_step": z_step, "z_unit": unit or None, "focusfuse": __version__,
    }


def run_pair(image_a: Path, image_b: Path, output: Path, model: GACN, *, decision_map: Path | None = None,
             align: str = "none", tile_size: int | None = None, compression: str | None = None,
             overwrite: bool = False, reduce: int = 1, edge_fill: bool = True) -> dict[str, Any]:
    """Fuse two images into ``output`` (and the final decision map, 1 = from A); returns the report.
    ``edge_fill`` as in :func:`focusfuse.fuse_stack`."""
    reduce = check_reduce(reduce)
    refs = frame_refs([image_a, image_b])
    if len(refs) != 2:
        raise UsageError("pair takes two single images (use `focusfuse stack` for multi-page TIFFs)")
    check_outputs([p for p in (output, decision_map) if p is not None], overwrite, input_paths(refs))
    check_map_formats(decision_map=decision_map)
    alignment = align_pair(refs, align)
    metadata = dataclasses.replace(read_metadata(image_a), description=provenance(model, "pair", 2, reduce))
    staged = StagedOutputs()
    maps = ("decision",) if decision_map is not None else ()
    streamed: list[Path] = []

    def sink(height: int, width: int, channels: int, dtype: np.dtype, n_tiles: int):
        if n_tiles == 1 or not _is_tiff(output) or (decision_map is not None and not _is_tiff(decision_map)):
            return ArraySink(height, width, channels, dtype, maps=maps)
        streamed.append(output)
        return TiffSink(height, width, channels, dtype, staged.path(output), compression=compression,
                        map_paths={"decision": staged.path(decision_map)} if decision_map else None,
                        fused_kwargs=tiff_write_kwargs(metadata, channels=channels))

    start = time.perf_counter()
    try:
        out, _ = fuse_frames(refs, PairStack, model, model.device, alignment=alignment, tile_size=tile_size,
                             sink=sink, reduce=reduce, edge_fill=edge_fill)
        if streamed:
            embed_exif_in_tiff(staged.path(output), metadata)
        else:
            write_image(staged.path(output), out.fused, metadata=metadata, compression=compression)
            if decision_map is not None:
                write_map(staged.path(decision_map), out.maps["decision"], "probability")
        staged.commit()
    except (FocusFuseError, OSError) as exc:
        renamed = staged.renamed_error(exc)
        if renamed is None:
            raise
        raise renamed from exc
    finally:
        staged.discard()
    h, w = out.shape
    return {"output": str(output), "width": w, "height": h, "device": str(model.device), "reduce": reduce,
            "edge_fill": edge_fill,
            "seconds": round(time.perf_counter() - start, 3), **peak_memory_mb(model.device), **weights_id(model)}


def aligned_frame_name(ref: Any, i: int) -> str:
    """File name for a registered frame: the input's name (and format, if writable), or frame_NNNN.tif."""
    if not isinstance(ref, FrameRef):
        return f"frame_{i:04d}.tif"
    stem = ref.path.stem if ref.page is None else f"{ref.path.stem}_z{ref.page:04d}"
    writable = ref.path.suffix.lower() in WRITE_SUFFIXES
    return stem + (ref.path.suffix if writable else ".tif")


def write_aligned_frames(inputs: Sequence[Any], out_dir: Path, *, mode: str = "auto", crop: bool = False,
                         overwrite: bool = False, progress: Progress | None = None,
                         align_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``--align-only``: register the frames onto the middle one and write them to ``out_dir``."""
    if mode == "none":
        raise UsageError("--align-only needs an alignment mode (auto, translation, affine, homography)")
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
    alignment = estimate_or_fail(refs, mode, progress=align_progress)
    box = checked_crop_box(alignment) if crop else None
    out_dir.mkdir(exist_ok=True)
    written = []
    for i, (ref, target) in enumerate(zip(refs, targets)):
        if not alignment.frames[i].ok:
            continue
        image = warp_frame(read_frame(ref), alignment.frames[i], alignment.shape)
        if box is not None:
            image = crop_to_box(image, box)
        metadata = read_metadata(ref.path) if isinstance(ref, FrameRef) else None
        write_image(target, np.ascontiguousarray(image), metadata=metadata)
        written.append(str(target))
        if progress is not None:
            progress(i + 1, len(refs), frame_name(ref, i))
    return {"aligned": written, "skipped": alignment.failures(), "crop_box": list(box) if box else None}
