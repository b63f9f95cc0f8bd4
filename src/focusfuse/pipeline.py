"""A whole stack job, files in -> files out: what ``focusfuse stack`` and ``focusfuse batch`` run.

read -> (align) -> fuse (features, decide, combine) -> write fused image, depth/index map, height map,
preview; plus a report (frames, size, device, time, peak memory, strategy, weights) for logs and batch
sidecars. Outputs are checked before any work and written atomically.
"""

from __future__ import annotations

import dataclasses
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

from . import __version__
from .align import crop_to_box, warp_frame
from .depth import depth_preview, height_map, smooth_index_map, z_spacing_of_inputs
from .errors import InputError, UsageError
from .frames import frame_name, frame_refs, input_paths, read_frame, require_frames
from .io import EIGHT_BIT_ONLY, TIFF_SUFFIXES, FrameRef, check_output_path, partial_path, write_image
from .metadata import ImageMetadata, embed_exif_in_tiff, read_metadata, tiff_write_kwargs
from .sinks import ArraySink, TiffSink
from .model import GACN
from .stack import DEFAULT_STRATEGY, PairStack, estimate_or_fail, fuse_frames, fuse_stack
from .weights import file_sha256

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
    compression: str | None = None
    overwrite: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def outputs(self) -> list[Path]:
        return [p for p in (self.output, self.index_map, self.depth_preview, self.height_map) if p is not None]


def check_outputs(outputs: Sequence[Path], overwrite: bool, inputs: Sequence[Path]) -> None:
    """Refuse duplicate, existing (without overwrite) or unwritable outputs, and outputs equal to inputs."""
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise UsageError("two outputs name the same file")
    for path in outputs:
        check_output_path(path, overwrite=overwrite, inputs=inputs)


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


def provenance(model: GACN, strategy: str, frames: int) -> str:
    """One line for the output's description: how the image was made."""
    weights = Path(model.source).name if model.source else "in-memory weights"
    return f"focusfuse {__version__} (GACN focus stacking): {frames} frames, strategy {strategy}, weights {weights}"


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


class StreamedTiffs:
    """TIFF outputs that a streaming sink writes under temporary names; renamed only when all succeeded."""

    def __init__(self) -> None:
        self.targets: dict[Path, Path] = {}

    def temp(self, target: Path) -> Path:
        tmp = partial_path(target)
        self.targets[tmp] = target
        return tmp

    def commit(self) -> None:
        for tmp, target in self.targets.items():
            if tmp.exists():
                os.replace(tmp, target)
        self.targets = {}

    def discard(self) -> None:
        for tmp in self.targets:
            if tmp.exists():
                tmp.unlink()
        self.targets = {}


def _is_tiff(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() in TIFF_SUFFIXES


def run_stack(job: StackJob, model: GACN, *, progress: Progress | None = None,
              align_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Fuse ``job`` with ``model`` and write its outputs; returns the report.

    When the image is processed in tiles and the output is a TIFF, the fused image (and a TIFF index
    map) stream to disk band by band, so memory stays bounded whatever the image size.
    """
    refs = frame_refs(list(job.inputs))
    require_frames(refs)
    paths = input_paths(refs)
    check_outputs(job.outputs(), job.overwrite, paths)
    z_step, unit = job.z_step, job.z_unit
    if z_step is None:
        z_step, unit = z_spacing_of_inputs(paths) or (None, unit)
    if job.height_map is not None and z_step is None:
        raise UsageError("--height-map needs --z-step (or a TIFF stack with z spacing in its metadata)")
    device = model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reference = refs[len(refs) // 2]
    metadata = read_metadata(reference.path) if isinstance(reference, FrameRef) else ImageMetadata()
    metadata = dataclasses.replace(metadata, description=provenance(model, job.strategy, len(refs)))
    streams = StreamedTiffs()
    stream_index = _is_tiff(job.index_map) and job.depth_smooth == 0
    keep_index = (job.index_map is not None and not stream_index) or job.depth_preview is not None \
        or job.height_map is not None

    def sink(height: int, width: int, channels: int, dtype: np.dtype, n_tiles: int):
        if n_tiles == 1 or not _is_tiff(job.output):
            return ArraySink(height, width, channels, dtype)
        return TiffSink(height, width, channels, dtype, streams.temp(job.output),
                        index_path=streams.temp(job.index_map) if stream_index else None,
                        compression=job.compression, keep_index=keep_index,
                        fused_kwargs=tiff_write_kwargs(metadata, channels=channels))

    start = time.perf_counter()
    try:
        result = fuse_stack(refs, strategy=job.strategy, weights=model, device=device, align=job.align,
                            crop=job.crop, tile_size=job.tile_size, progress=progress, align_progress=align_progress,
                            sink=sink)
        if result.fused is not None:
            write_image(job.output, result.fused, metadata=metadata, compression=job.compression)
        else:
            embed_exif_in_tiff(next(iter(streams.targets)), metadata)
            streams.commit()
        index = None if result.index_map is None else smooth_index_map(result.index_map, job.depth_smooth)
        if job.index_map is not None and not (stream_index and result.fused is None):
            write_map(job.index_map, index, "index")
        if job.depth_preview is not None:
            write_image(job.depth_preview, depth_preview(index, len(refs), z_step, unit))
        if job.height_map is not None:
            write_image(job.height_map, height_map(index, z_step), compression=job.compression)
    finally:
        streams.discard()
    h, w = result.shape
    return {
        "output": str(job.output), "inputs": len(refs), "frames_used": len(result.frames),
        "skipped": result.skipped, "width": w, "height": h, "strategy": job.strategy, "align": job.align,
        "crop_box": list(result.box) if result.box else None, "device": str(device),
        "seconds": round(time.perf_counter() - start, 3), **peak_memory_mb(device), **weights_id(model),
        "z_step": z_step, "z_unit": unit or None, "focusfuse": __version__,
    }


def run_pair(image_a: Path, image_b: Path, output: Path, model: GACN, *, decision_map: Path | None = None,
             align: str = "none", tile_size: int | None = None, compression: str | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Fuse two images into ``output`` (and the final decision map, 1 = from A); returns the report."""
    refs = frame_refs([image_a]) + frame_refs([image_b])
    if len(refs) != 2:
        raise UsageError("pair takes two single images (use `focusfuse stack` for multi-page TIFFs)")
    check_outputs([p for p in (output, decision_map) if p is not None], overwrite, input_paths(refs))
    alignment = None
    if align != "none":
        alignment = estimate_or_fail(refs, align, reference=0)
        if alignment.failures():
            raise InputError(f"alignment failed: {alignment.failures()[0]} (try --align none)")
    metadata = dataclasses.replace(read_metadata(image_a), description=provenance(model, "pair", 2))
    streams = StreamedTiffs()
    maps = ("decision",) if decision_map is not None else ()

    def sink(height: int, width: int, channels: int, dtype: np.dtype, n_tiles: int):
        if n_tiles == 1 or not _is_tiff(output) or (decision_map is not None and not _is_tiff(decision_map)):
            return ArraySink(height, width, channels, dtype, maps=maps)
        return TiffSink(height, width, channels, dtype, streams.temp(output), compression=compression,
                        map_paths={"decision": streams.temp(decision_map)} if decision_map else None,
                        fused_kwargs=tiff_write_kwargs(metadata, channels=channels))

    start = time.perf_counter()
    try:
        out, _ = fuse_frames(refs, PairStack, model, model.device, alignment=alignment, tile_size=tile_size,
                             sink=sink)
        if out.fused is not None:
            write_image(output, out.fused, metadata=metadata, compression=compression)
            if decision_map is not None:
                write_map(decision_map, out.maps["decision"], "probability")
        else:
            embed_exif_in_tiff(next(iter(streams.targets)), metadata)
            streams.commit()
    finally:
        streams.discard()
    h, w = out.shape
    return {"output": str(output), "width": w, "height": h, "device": str(model.device),
            "seconds": round(time.perf_counter() - start, 3), **peak_memory_mb(model.device), **weights_id(model)}


def write_aligned_frames(inputs: Sequence[Any], out_dir: Path, *, mode: str = "auto", crop: bool = False,
                         overwrite: bool = False, progress: Progress | None = None,
                         align_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``--align-only``: register the frames onto the middle one and write them to ``out_dir``."""
    refs = frame_refs(list(inputs))
    require_frames(refs)
    out_dir.mkdir(parents=True, exist_ok=True)
    alignment = estimate_or_fail(refs, mode if mode != "none" else "auto", progress=align_progress)
    box = alignment.valid_box() if crop else None
    targets = []
    for i, ref in enumerate(refs):
        if isinstance(ref, FrameRef):
            stem = ref.path.stem if ref.page is None else f"{ref.path.stem}_z{ref.page:04d}"
            suffix = ref.path.suffix if ref.path.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp") else ".tif"
        else:
            stem, suffix = f"frame_{i:04d}", ".tif"
        targets.append(out_dir / f"{stem}{suffix}")
    check_outputs(targets, overwrite, input_paths(refs))
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
