"""Where fused tiles go: arrays in memory, or a tiled (Big)TIFF written band by band.

The fusion loop hands every finished tile (core region, fused pixels, index map) to a sink. The TIFF
sink keeps only one band of tiles (a row of the grid) in memory and streams TIFF tiles to a writer
thread, so an output of any size is written in bounded memory.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tifffile

from ..box import Box

TIFF_TILE = 256


class Sink(Protocol):
    """Where a fusion's finished regions go, in row-major order."""

    fused: np.ndarray | None  # the fused image when kept in memory (None when written elsewhere)
    index: np.ndarray | None  # the index map when kept in memory
    maps: dict[str, np.ndarray]  # named float maps kept in memory
    shape: tuple[int, int]

    def write(self, core: Box, fused: np.ndarray, index: np.ndarray,
              maps: dict[str, np.ndarray] | None = None) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Output(Protocol):
    """Opens the sink of one fusion once its size and whether it runs in tiles are known."""

    def held_bytes(self, height: int, width: int, channels: int, dtype: np.dtype, tiled: bool) -> int:
        """Bytes the sink keeps in memory until the end."""
        ...

    def open(self, height: int, width: int, channels: int, dtype: np.dtype, tiled: bool) -> Sink: ...


def array_bytes(height: int, width: int, channels: int, dtype: np.dtype, maps: int = 0) -> int:
    """Bytes of an :class:`ArraySink`: the fused image, the uint16 index map and ``maps`` float32 maps."""
    return height * width * (channels * np.dtype(dtype).itemsize + 2 + 4 * maps)


class ArrayOutput:
    """The fused image, the index map and the named ``maps`` collected in arrays."""

    def __init__(self, maps: Sequence[str] = ()) -> None:
        self.maps = tuple(maps)

    def held_bytes(self, height: int, width: int, channels: int, dtype: np.dtype, tiled: bool) -> int:
        return array_bytes(height, width, channels, dtype, len(self.maps))

    def open(self, height: int, width: int, channels: int, dtype: np.dtype, tiled: bool) -> ArraySink:
        return ArraySink(height, width, channels, dtype, maps=self.maps)


class ArraySink:
    """Collects the fused image, the index map and any named float maps (e.g. decision maps) in arrays."""

    def __init__(self, height: int, width: int, channels: int, dtype: np.dtype, maps: Sequence[str] = ()) -> None:
        shape = (height, width) if channels == 1 else (height, width, channels)
        self.shape = (height, width)
        self.channels = channels
        self.fused = np.zeros(shape, dtype=dtype)
        self.index = np.zeros((height, width), dtype=np.uint16)
        self.maps = {name: np.zeros((height, width), dtype=np.float32) for name in maps}

    def write(self, core: Box, fused: np.ndarray, index: np.ndarray, maps: dict[str, np.ndarray] | None = None) -> None:
        if fused.ndim == 2 and self.fused.ndim == 3:
            fused = fused[:, :, None]
        self.fused[core.slices] = fused
        self.index[core.slices] = index
        for name, values in (maps or {}).items():
            if name in self.maps:
                self.maps[name][core.slices] = values

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class TiffBandWriter:
    """Writes a tiled TIFF from row bands handed over in order (a writer thread pulls TIFF tiles)."""

    def __init__(self, path: str | os.PathLike, height: int, width: int, channels: int, dtype: np.dtype, *,
                 compression: str | None = None, **tiff_kwargs: Any) -> None:
        self.path = Path(path)
        self.shape = (height, width) if channels == 1 else (height, width, channels)
        self.dtype = np.dtype(dtype)
        self.bands: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.finished = False  # the end marker was taken from the queue
        self.aborted = False
        raw = height * width * channels * self.dtype.itemsize
        self.kwargs = dict(tile=(TIFF_TILE, TIFF_TILE), compression=compression, bigtiff=raw > 2**31 - 2**25,
                           photometric="rgb" if channels == 3 else "minisblack", metadata=None, **tiff_kwargs)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _tiles(self) -> Iterator[np.ndarray]:
        width = self.shape[1]
        while (band := self.bands.get()) is not None:
            if self.aborted:
                break
            for ty in range(0, band.shape[0], TIFF_TILE):
                for tx in range(0, width, TIFF_TILE):
                    tile = band[ty:ty + TIFF_TILE, tx:tx + TIFF_TILE]
                    if tile.shape[:2] != (TIFF_TILE, TIFF_TILE):
                        padded = np.zeros((TIFF_TILE, TIFF_TILE) + tile.shape[2:], dtype=tile.dtype)
                        padded[:tile.shape[0], :tile.shape[1]] = tile
                        tile = padded
                    yield tile
        self.finished = True

    def _run(self) -> None:
        try:
            tifffile.imwrite(self.path, self._tiles(), shape=self.shape, dtype=self.dtype, **self.kwargs)
        except BaseException as exc:  # reported by close()
            self.error = exc
        while not self.finished:  # drain, so the producer never blocks on a full queue
            self.finished = self.bands.get() is None

    def write_band(self, band: np.ndarray) -> None:
        if self.error is None:
            self.bands.put(band)

    def close(self) -> None:
        self.bands.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop writing (the partial file is the caller's to remove) and release the thread."""
        self.aborted = True
        self.bands.put(None)
        self.thread.join()


class TiffSink:
    """Streams the fused image, and optionally the index map and decision maps, into tiled TIFFs.

    Tiles must arrive in row-major order. Each finished band (a row of the tile grid) is cut into rows
    of TIFF tiles and handed to writer threads; only the current band and less than one row of TIFF
    tiles are held in memory. Decision maps are stored as round(p * 65535). With ``keep_index`` the
    index map is also collected in memory (for previews and height maps).
    """

    def __init__(self, height: int, width: int, channels: int, dtype: np.dtype, fused_path: Path, *,
                 index_path: Path | None = None, map_paths: dict[str, Path] | None = None,
                 compression: str | None = None, keep_index: bool = False,
                 fused_kwargs: dict[str, Any] | None = None) -> None:
        self.width = width
        self.shape = (height, width)
        self.layers: dict[str, tuple[int, np.dtype]] = {"fused": (channels, np.dtype(dtype))}
        self.writers = {"fused": TiffBandWriter(fused_path, height, width, channels, dtype, compression=compression,
                                                **(fused_kwargs or {}))}
        for name, path in (({"index": index_path} if index_path else {}) | (map_paths or {})).items():
            self.layers[name] = (1, np.dtype(np.uint16))
            self.writers[name] = TiffBandWriter(path, height, width, 1, np.uint16, compression=compression)
        self.fused = None
        self.maps: dict[str, np.ndarray] = {}
        self.index = np.zeros((height, width), np.uint16) if keep_index else None
        self.band_y0: int | None = None
        self.band: dict[str, np.ndarray] = {}
        self.filled = 0
        self.pending: dict[str, list[np.ndarray]] = {name: [] for name in self.layers}

    def write(self, core: Box, fused: np.ndarray, index: np.ndarray, maps: dict[str, np.ndarray] | None = None) -> None:
        if self.band_y0 != core.y0:
            self._finish_band()
            rows = core.shape[0]
            self.band_y0, self.filled = core.y0, 0
            self.band = {name: np.zeros((rows, self.width) + ((c,) if c > 1 else ()), dtype=dtype)
                         for name, (c, dtype) in self.layers.items()}
        values = {"fused": fused, "index": index}
        for name, p in (maps or {}).items():
            if name in self.layers:
                values[name] = np.round(np.clip(p, 0.0, 1.0) * 65535.0).astype(np.uint16)
        for name, band in self.band.items():
            tile = values[name]
            if tile.ndim == 2 and band.ndim == 3:
                tile = tile[:, :, None]
            band[:, core.x0:core.x1] = tile
        if self.index is not None:
            self.index[core.slices] = index
        self.filled += core.shape[1]

    def _finish_band(self) -> None:
        if not self.band:
            return
        if self.filled != self.width:
            raise RuntimeError("a band was finished before all its tiles arrived")
        for name, band in self.band.items():
            self.pending[name].append(band)
        self.band = {}
        self._emit(final=False)

    def _emit(self, final: bool) -> None:
        """Hand over whole rows of TIFF tiles (and, at the end, whatever is left)."""
        for name, parts in self.pending.items():
            if not parts:
                continue
            rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
            cut = rows.shape[0] if final else rows.shape[0] // TIFF_TILE * TIFF_TILE
            if cut:
                self.writers[name].write_band(rows[:cut])
            self.pending[name] = [rows[cut:]] if cut < rows.shape[0] else []

    def close(self) -> None:
        self._finish_band()
        self._emit(final=True)
        errors = []
        for writer in self.writers.values():
            try:
                writer.close()
            except BaseException as exc:  # close every writer, then report the first problem
                errors.append(exc)
        if errors:
            raise errors[0]

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
