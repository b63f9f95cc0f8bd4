"""Job outputs: checked before any work, maps written as data, everything staged under temporary names and
renamed together at the end (all outputs or none)."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..io.metadata import ImageMetadata, tiff_write_kwargs
from ..io.sinks import ArraySink, TiffSink, array_bytes

from ..errors import FocusFuseError, UsageError
from ..io.images import (EIGHT_BIT_ONLY, TIFF_SUFFIXES, check_output_file, check_output_path, final_name,
                         partial_path, write_image)


STREAMED_BAND_ROWS = 2048  # held-memory estimate of a streamed TIFF: about four bands of at most this many rows


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


def remove_stale_partials(outputs: Sequence[Path]) -> list[Path]:
    """Remove the temporary files other processes left for ``outputs`` when they were killed mid-write (a batch
    re-run, or a stack retried after its worker died); returns what was removed."""
    removed = []
    for output in outputs:
        mine = partial_path(output).name
        for stale in output.parent.glob(f".{glob.escape(output.stem)}.partial-*{glob.escape(output.suffix)}"):
            if stale.name != mine and final_name(stale) == output.name:
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def is_tiff(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() in TIFF_SUFFIXES


MAP_SUFFIXES = (".png", ".tif", ".tiff")


def check_map_formats(index_map: Path | None = None, decision_map: Path | None = None,
                      height: Path | None = None) -> None:
    """Maps are data: lossless formats only (index/decision: PNG or TIFF; heights: float32 TIFF)."""
    for path, what in ((index_map, "index/depth map"), (decision_map, "decision map")):
        if path is not None and path.suffix.lower() not in MAP_SUFFIXES:
            raise UsageError(f"{path}: the {what} needs a lossless 16-bit format (.png or .tif)")
    if height is not None and not is_tiff(height):
        raise UsageError(f"{height}: the height map is float32 data: use .tif")


@contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    """Outputs written in the block are renamed into place together when it ends without error, and removed
    when it fails; errors name the output the user asked for, not its temporary file."""
    staged = StagedOutputs()
    try:
        yield staged
        staged.commit()
    except (FocusFuseError, OSError) as exc:
        renamed = staged.renamed_error(exc)
        if renamed is None:
            raise
        raise renamed from exc
    finally:
        staged.discard()


def write_all(writes: Sequence[Callable[[], object]]) -> None:
    """Run independent output writes on their own threads; the first error is raised after all finished."""
    if len(writes) <= 1:
        for write in writes:
            write()
        return
    with ThreadPoolExecutor(len(writes)) as pool:
        futures = [pool.submit(write) for write in writes]
    for future in futures:
        future.result()


class JobOutput:
    """Where a job's fusion goes: arrays, or, for a tiled run into a TIFF, the fused image (and TIFF maps)
    streamed band by band into their staged files, so memory stays bounded whatever the image size."""

    def __init__(self, output: Path, staged: StagedOutputs, metadata: ImageMetadata, *, compression: str | None,
                 index_path: Path | None = None, map_paths: dict[str, Path] | None = None,
                 keep_index: bool = False) -> None:
        self.output, self.staged, self.metadata, self.compression = output, staged, metadata, compression
        self.index_path, self.map_paths, self.keep_index = index_path, map_paths or {}, keep_index
        self.streamed: list[Path] = []

    def streams(self, tiled: bool) -> bool:
        return tiled and is_tiff(self.output) and all(is_tiff(p) for p in self.map_paths.values())

    def held_bytes(self, height: int, width: int, channels: int, dtype: np.dtype, tiled: bool) -> int:
        if not self.streams(tiled):
            return array_bytes(height, width, channels, dtype, len(self.map_paths))
        layers = channels * np.dtype(dtype).itemsize + 2 + 2 * len(self.map_paths)
        return 4 * min(height, STREAMED_BAND_ROWS) * width * layers + (height * width * 2 if self.keep_index else 0)

    def open(self, height: int, width: int, channels: int, dtype: np.dtype, tiled: bool) -> ArraySink | TiffSink:
        if not self.streams(tiled):
            return ArraySink(height, width, channels, dtype, maps=tuple(self.map_paths))
        self.streamed = [self.output] + ([self.index_path] if self.index_path else []) + list(self.map_paths.values())
        staged = self.staged
        return TiffSink(height, width, channels, dtype, staged.path(self.output),
                        index_path=staged.path(self.index_path) if self.index_path else None,
                        map_paths={k: staged.path(p) for k, p in self.map_paths.items()} or None,
                        compression=self.compression, keep_index=self.keep_index,
                        fused_kwargs=tiff_write_kwargs(self.metadata, channels=channels))


__all__ = ["JobOutput", "write_all", "staged_outputs", "check_outputs", "write_map", "StagedOutputs", "is_tiff",
           "check_map_formats", "MAP_SUFFIXES", "remove_stale_partials"]
