"""Frame sources: a frame's size and type without decoding it, and its pixels region by region.

Tiled fusion reads each frame once per tile, so a frame must be readable by region:
- arrays are sliced;
- tiled or striped TIFF pages are read by decoding only the tiles/strips a region touches;
- other files (PNG, JPEG, ...) are decoded once into a raw temporary file, read back with pread (no
  memory map, so the cache never counts towards our resident memory);
- an aligned frame is warped region by region from the source pixels the region maps onto.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tifffile

from ..align.estimate import FrameAlignment, warp_frame
from ..errors import InputError
from .fill import EdgeFill, area_in, edge_fill, find_edge_fill, replace_fill
from .refs import clean_pixels, read_frame, working_dtype
from ..io.images import (FrameRef, TIFF_SUFFIXES, exif_orientation, open_header, png_header, stack_series,
                         tiff_frame_planes, tiff_orientation, tiff_plane_page)
from ..box import Box


@dataclass(frozen=True)
class FrameInfo:
    shape: tuple[int, int]
    channels: int
    dtype: np.dtype


class FrameSource:
    """A frame: ``info`` (size, channels, dtype) and ``read(box)`` (HxW or HxWx3, working dtype)."""

    name: str
    info: FrameInfo

    def read(self, box: Box | None = None) -> np.ndarray:
        raise NotImplementedError

    def expect_reads(self, many: bool) -> None:
        """Told whether the frame will be read region by region many times (tiles) or once."""

    def fill_in(self, box: Box, pixels: np.ndarray) -> tuple[np.ndarray, Box] | None:
        """After ``read(box)`` gave ``pixels``: None, or (the pixels the network sees, the image area
        relative to ``box``) when the frame has edge fill there (see :mod:`focusfuse.frames.fill`)."""
        return None

    def close(self) -> None:
        """Release temporary files."""


def _layout_info(image: np.ndarray, name: str) -> FrameInfo:
    channels = 1 if image.ndim == 2 else (1 if image.shape[2] in (1, 2) else 3)
    return FrameInfo(image.shape[:2], channels, working_dtype(image.dtype, name))


class ArraySource(FrameSource):
    """A caller's array; converted to the working dtype and layout region by region, when read."""

    def __init__(self, image: np.ndarray, name: str) -> None:
        self.name = name
        self.image = np.asarray(image)
        if self.image.ndim not in (2, 3):
            raise InputError(f"{name}: unsupported image shape {self.image.shape}")
        self.info = _layout_info(self.image, name)

    def read(self, box: Box | None = None) -> np.ndarray:
        return clean_pixels(self.image if box is None else self.image[box.slices], self.name)


# ------------------------------------------------------------------------------------------- probing

def _png_info(path: Path) -> FrameInfo | None:
    with open(path, "rb") as fh:
        header = png_header(fh.read(26))
    if header is None:
        return None
    width, height, depth, colour = header
    channels = 1 if colour in (0, 4) else 3
    return FrameInfo((height, width), channels, np.dtype(np.uint16 if depth == 16 else np.uint8))


def _page_layout(key: tifffile.TiffPage) -> tuple[int, int, int]:
    """(height, width, samples) of a page, planar or interleaved."""
    shape = key.shape
    if len(shape) == 2:
        return int(shape[0]), int(shape[1]), 1
    if key.planarconfig == 2:
        return int(shape[1]), int(shape[2]), int(shape[0])
    return int(shape[0]), int(shape[1]), int(shape[2])


OpenTiff = tuple[tifffile.TiffFile, threading.Lock, tifffile.TiffPageSeries]  # a file, its handle's lock, its stack


def _open_tiff(path: Path) -> OpenTiff:
    """``path`` opened, with a lock for its handle and the series its frames are read from (found once: for
    pages written one by one that means looking at every page)."""
    tif = tifffile.TiffFile(path)
    try:
        return tif, threading.Lock(), stack_series(tif)
    except BaseException:
        tif.close()
        raise


class OpenTiffs:
    """TIFF files opened once and shared by every frame and region read from them (many pages are
    otherwise re-parsed on every read). Worker threads share them: each file's handle has a lock."""

    def __init__(self) -> None:
        self.files: dict[Path, OpenTiff] = {}
        self.lock = threading.Lock()

    def get(self, path: Path) -> OpenTiff:
        with self.lock:
            if path not in self.files:
                self.files[path] = _open_tiff(path)
            return self.files[path]

    def close(self) -> None:
        for tif, _, _ in self.files.values():
            tif.close()
        self.files = {}


@contextmanager
def _opened(ref: FrameRef, tiffs: OpenTiffs | None) -> Iterator[OpenTiff]:
    """The TIFF file of ``ref``, the lock that guards its file handle, and its stack series."""
    if tiffs is not None:
        yield tiffs.get(ref.path)
    else:
        tif, lock, series = _open_tiff(ref.path)
        with tif:
            yield tif, lock, series


def _tiff_info(ref: FrameRef, tiffs: OpenTiffs | None = None) -> FrameInfo:
    """Size, channels and dtype of TIFF frame ``ref.page`` as :func:`read_frame` will give it."""
    try:
        with _opened(ref, tiffs) as (tif, lock, series), lock:
            planes = tiff_frame_planes(series, ref.page or 0)
            height, width, samples = _page_layout(series.keyframe)
            dtype = np.dtype(series.keyframe.dtype)
    except Exception as exc:
        raise InputError(f"{ref.path}: not a readable TIFF ({str(exc).splitlines()[0]})") from exc
    channels = 3 if len(planes) == 3 or samples >= 3 else 1  # 2 samples: gray + alpha; 4: RGBA
    return FrameInfo((height, width), channels, working_dtype(dtype, ref.name))


def probe(ref: FrameRef, tiffs: OpenTiffs | None = None) -> FrameInfo:
    """Size, channels and dtype of a file frame, decoding as little as possible."""
    suffix = ref.path.suffix.lower()
    if not ref.path.is_file():
        raise InputError(f"{ref.path}: no such file")
    if suffix in TIFF_SUFFIXES:
        info = _tiff_info(ref, tiffs)
    else:
        info = _png_info(ref.path) if suffix == ".png" else None
        if info is None:
            try:
                with open_header(ref.path) as im:
                    width, height = im.size
                    channels = 1 if im.mode in ("L", "I;16", "I", "F", "LA", "1") else 3
                    dtype = np.dtype(np.uint16 if im.mode.startswith("I;16") else np.uint8)
                    info = FrameInfo((height, width), channels, dtype)
            except Exception:  # not something Pillow knows (or too large for it): decode it to learn
                image = read_frame(ref)
                info = _layout_info(image, ref.name)
    if exif_orientation(ref.path) in (5, 6, 7, 8):
        info = replace(info, shape=(info.shape[1], info.shape[0]))
    if info.shape[0] == 0 or info.shape[1] == 0:
        raise InputError(f"{ref.path}: image has no pixels")
    return info


# -------------------------------------------------------------------------------------- TIFF regions

def _chunks_readable(page: tifffile.TiffPage | tifffile.TiffFrame | None) -> bool:
    """Whether :func:`_read_page_region` can read ``page``: interleaved, 2-D, one offset per chunk."""
    if page is None:
        return False
    key = page.keyframe
    return (key.planarconfig == 1 and key.imagedepth == 1 and np.dtype(key.dtype) != bool
            and len(page.dataoffsets) == math.prod(key.chunked) and all(page.dataoffsets))


def tiff_compressed(ref: FrameRef, tiffs: OpenTiffs | None = None) -> bool:
    """Whether the frame's TIFF pages are compressed (reading a region then means decoding its chunks)."""
    try:
        with _opened(ref, tiffs) as (tif, lock, series), lock:
            return series.keyframe.compression != 1
    except Exception:
        return True


def tiff_region_readable(ref: FrameRef, tiffs: OpenTiffs | None = None) -> bool:
    """True when every page of the frame is stored in tiles/strips :func:`read_tiff_region` can decode.

    False for planar pages, pages without an IFD of their own (truncated ImageJ, missing OME
    planes), RGB pages that would have to be stacked, and rotated (EXIF orientation) files.
    """
    try:
        with _opened(ref, tiffs) as (tif, lock, series), lock:
            pages = [tiff_plane_page(series, i) for i in tiff_frame_planes(series, ref.page or 0)]
            single_samples = len(pages) == 1 or series.keyframe.samplesperpixel == 1
            upright = tiff_orientation(tif) == 1
            return single_samples and all(_chunks_readable(p) for p in pages) and upright
    except Exception:
        return False


def _read_uncompressed_rows(page: tifffile.TiffPage | tifffile.TiffFrame, box: Box,
                            lock: threading.Lock) -> np.ndarray:
    """Pixels of ``box`` from an uncompressed striped page, reading only the bytes of its rows."""
    key = page.keyframe
    samples = key.shape[2] if len(key.shape) == 3 else 0
    dtype = np.dtype(key.dtype).newbyteorder(page.parent.byteorder)
    pixel = max(samples, 1) * dtype.itemsize
    row_bytes = key.imagewidth * pixel
    rows_per_strip = key.rowsperstrip or key.imagelength
    out = np.empty(box.shape + ((samples,) if samples else ()), dtype=key.dtype)
    handle = page.parent.filehandle
    for r, y in enumerate(range(box.y0, box.y1)):
        strip, row = divmod(y, rows_per_strip)
        with lock:
            handle.seek(page.dataoffsets[strip] + row * row_bytes + box.x0 * pixel)
            raw = handle.read(box.shape[1] * pixel)
        data = np.frombuffer(raw, dtype=dtype)
        out[r] = data.reshape(out.shape[1:])
    return out


def _read_page_region(page: tifffile.TiffPage | tifffile.TiffFrame, box: Box, lock: threading.Lock) -> np.ndarray:
    """Pixels of ``box`` from one tiled/striped page, decoding only the chunks it touches."""
    key = page.keyframe
    if key.compression == 1 and not key.is_tiled and key.bitspersample == 8 * np.dtype(key.dtype).itemsize \
            and key.predictor == 1 and key.fillorder == 1:
        return _read_uncompressed_rows(page, box, lock)
    chunk_h, chunk_w = key.chunks[0], key.chunks[1]
    per_row = key.chunked[1]
    samples = key.shape[2] if len(key.shape) == 3 else 0
    out = np.empty(box.shape + ((samples,) if samples else ()), dtype=key.dtype)
    handle = page.parent.filehandle
    for row in range(box.y0 // chunk_h, (box.y1 - 1) // chunk_h + 1):
        for col in range(box.x0 // chunk_w, (box.x1 - 1) // chunk_w + 1):
            index = row * per_row + col
            with lock:  # the handle is shared; decoding runs outside the lock
                handle.seek(page.dataoffsets[index])
                data = handle.read(page.databytecounts[index])
            segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
            segment = segment[0]  # (chunk_h, chunk_w[, samples]), padded at the edges
            if not samples:
                segment = segment[..., 0] if segment.ndim == 3 else segment
            y0, x0 = row * chunk_h, col * chunk_w
            part = Box(max(box.y0, y0), min(box.y1, y0 + chunk_h), max(box.x0, x0), min(box.x1, x0 + chunk_w))
            out[part.within(box)] = segment[part.y0 - y0:part.y1 - y0, part.x0 - x0:part.x1 - x0]
    return out


def read_tiff_region(ref: FrameRef, box: Box, tiffs: OpenTiffs | None = None) -> np.ndarray:
    """Pixels of ``box`` of TIFF frame ``ref.page``; a frame of C pages is read page by page and stacked."""
    with _opened(ref, tiffs) as (tif, lock, series):
        with lock:  # pages are parsed from the shared handle when first touched
            pages = [series.pages[i] for i in tiff_frame_planes(series, ref.page or 0)]
            for page in pages:
                page.keyframe, page.dataoffsets, page.databytecounts  # noqa: B018 (parse them now)
        parts = [_read_page_region(page, box, lock) for page in pages]
    return parts[0] if len(parts) == 1 else np.stack(parts, axis=-1)


# ------------------------------------------------------------------------------------- file sources

class FileSource(FrameSource):
    """A file frame; decoded once when it will be read again, region reads from TIFF chunks or a raw cache.

    When the frame will be read more than once (an alignment pass, then fusion; or tile by tile), its
    first whole decode is also written to a raw file in ``cache_dir`` (read back with pread, no memory
    map, so the cache never counts towards our resident memory) and every later read comes from there.
    Tiled or striped TIFF pages are read region by region from the file itself until then (a compressed
    one is cached once an alignment pass decoded it whole; an uncompressed one is as fast to read as the
    cache). Reads of one source come from one thread at a time (a lock makes sure).
    """

    def __init__(self, ref: FrameRef, name: str, cache_dir: str | os.PathLike | None = None,
                 tiffs: OpenTiffs | None = None) -> None:
        self.ref = ref
        self.name = name
        self.tiffs = tiffs
        self.info = probe(ref, tiffs)
        self.cache_dir = cache_dir
        self.regions_from_tiff = ref.path.suffix.lower() in TIFF_SUFFIXES and tiff_region_readable(ref, tiffs)
        self.cacheable = not self.regions_from_tiff or tiff_compressed(ref, tiffs)
        self.rereads = True
        self.cache_path: Path | None = None
        self.cached: FrameInfo | None = None
        self.lock = threading.RLock()

    def expect_reads(self, many: bool) -> None:
        self.rereads = many

    @property
    def decodes_whole(self) -> bool:
        """Whether reading a region first decodes the whole frame (not a tiled/striped TIFF)."""
        return not self.regions_from_tiff

    def read(self, box: Box | None = None) -> np.ndarray:
        with self.lock:
            if box is None or box.shape == self.info.shape:
                return self._whole()
            if self.cache_path is not None:
                return self._cached_region(box)
            if self.regions_from_tiff:
                return self._checked(clean_pixels(read_tiff_region(self.ref, box, self.tiffs), self.name), box.shape)
            if not self.rereads:
                return self._whole()[box.slices]
            self._whole()
            return self._cached_region(box)

    def _checked(self, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Decoded pixels must match what the header promised (size, channels, dtype)."""
        found = _layout_info(image, self.name)
        if image.shape[:2] != tuple(shape) or found.channels != self.info.channels or found.dtype != self.info.dtype:
            raise InputError(f"{self.name}: decoded image ({image.shape}, {image.dtype}) does not match its header "
                             f"({self.info.shape}, {self.info.channels} channel(s), {self.info.dtype})")
        return image

    def _whole(self) -> np.ndarray:
        if self.cache_path is not None:
            h, w = self.info.shape
            return self._cached_region(Box(0, h, 0, w))
        image = self._checked(read_frame(self.ref), self.info.shape)
        if self.rereads and self.cacheable:
            self._write_cache(image)
        return image

    def _write_cache(self, image: np.ndarray) -> None:
        handle, name = tempfile.mkstemp(prefix="focusfuse-", suffix=".raw", dir=self.cache_dir)
        try:
            with os.fdopen(handle, "wb") as fh:
                fh.write(memoryview(np.ascontiguousarray(image)).cast("B"))
        except OSError as exc:
            Path(name).unlink(missing_ok=True)
            raise InputError(f"{self.name}: cannot keep the decoded frame in {Path(name).parent} ({exc.strerror}); "
                             "set TMPDIR to a folder with more space") from exc
        self.cached = _layout_info(image, self.name)
        self.cache_path = Path(name)

    def _cached_region(self, box: Box) -> np.ndarray:
        info = self.cached
        assert info is not None and self.cache_path is not None
        pixel = info.channels * info.dtype.itemsize
        row_bytes = info.shape[1] * pixel
        out = np.empty((box.shape[0], box.shape[1] * info.channels), dtype=info.dtype)
        with open(self.cache_path, "rb") as fh:
            fd = fh.fileno()
            if box.x0 == 0 and box.x1 == info.shape[1]:  # whole rows: one read
                _pread_into(fd, memoryview(out).cast("B"), box.y0 * row_bytes)
            else:
                for r, y in enumerate(range(box.y0, box.y1)):
                    data = os.pread(fd, (box.x1 - box.x0) * pixel, y * row_bytes + box.x0 * pixel)
                    out[r] = np.frombuffer(data, dtype=info.dtype)
        return out if info.channels == 1 else out.reshape(box.shape[0], box.shape[1], info.channels)

    def close(self) -> None:
        if self.cache_path is not None and self.cache_path.exists():
            self.cache_path.unlink()
        self.cache_path = None


def _pread_into(fd: int, buffer: memoryview, offset: int) -> None:
    """Fill ``buffer`` from file ``fd`` at ``offset`` (reads may come back short)."""
    done = 0
    while done < len(buffer):
        count = os.preadv(fd, [buffer[done:]], offset + done)
        if count <= 0:
            raise InputError(f"cached frame data ended early at byte {offset + done}")
        done += count


# ------------------------------------------------------------------------------- warped and cropped

class WarpedSource(FrameSource):
    """A source registered onto the reference grid; regions are warped from the source area they map to."""

    MARGIN = 3  # source pixels beyond the mapped area (bicubic support)

    def __init__(self, source: FrameSource, alignment: FrameAlignment, shape: tuple[int, int]) -> None:
        self.source = source
        self.name = source.name
        self.alignment = alignment
        self.info = replace(source.info, shape=tuple(shape))

    def read(self, box: Box | None = None) -> np.ndarray:
        h, w = self.info.shape
        box = box or Box(0, h, 0, w)
        if box.shape == (h, w):
            return warp_frame(self.source.read(), self.alignment, (h, w))
        area = self.source_area(box)
        return warp_frame(self.source.read(area), self.alignment, box.shape, origin=(box.y0, box.x0),
                          offset=(area.y0, area.x0))

    def source_area(self, box: Box) -> Box:
        """The source pixels ``box`` maps onto, plus the bicubic margin, clipped to the source per axis."""
        inverse = np.linalg.inv(self.alignment.transform)
        corners = np.array([[box.x0, box.y0, 1], [box.x1 - 1, box.y0, 1], [box.x0, box.y1 - 1, 1],
                            [box.x1 - 1, box.y1 - 1, 1]], np.float64) @ inverse.T
        xs, ys = corners[:, 0] / corners[:, 2], corners[:, 1] / corners[:, 2]
        src_h, src_w = self.source.info.shape

        def span(low: float, high: float, size: int) -> tuple[int, int]:
            start = min(max(math.floor(low) - self.MARGIN, 0), size - 1)
            stop = max(min(math.ceil(high) + self.MARGIN + 1, size), start + 1)
            return start, stop

        (y0, y1), (x0, x1) = span(ys.min(), ys.max(), src_h), span(xs.min(), xs.max(), src_w)
        return Box(y0, y1, x0, x1)

    def expect_reads(self, many: bool) -> None:
        self.source.expect_reads(many)

    def close(self) -> None:
        self.source.close()


class CroppedSource(FrameSource):
    """A source seen through a window (``--crop``: the area valid in all aligned frames)."""

    def __init__(self, source: FrameSource, window: Box) -> None:
        self.source = source
        self.name = source.name
        self.window = window
        self.info = replace(source.info, shape=window.shape)

    def read(self, box: Box | None = None) -> np.ndarray:
        box = box or Box(0, self.window.shape[0], 0, self.window.shape[1])
        w = self.window
        return self.source.read(Box(w.y0 + box.y0, w.y0 + box.y1, w.x0 + box.x0, w.x0 + box.x1))

    def expect_reads(self, many: bool) -> None:
        self.source.expect_reads(many)

    def close(self) -> None:
        self.source.close()


class FillAwareSource(FrameSource):
    """A source whose edge fill is found on its first read (from the pixels of a whole-frame read, or
    from its edges read region by region) and reported by :meth:`fill_in`."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.name = source.name
        self.info = source.info
        self.fill: EdgeFill | None = None

    def read(self, box: Box | None = None) -> np.ndarray:
        pixels = self.source.read(box)
        if self.fill is None:
            whole = box is None or box.shape == self.info.shape
            self.fill = (edge_fill(pixels) if whole
                         else find_edge_fill(self.source.read, self.info.shape, self.info.dtype))
        return pixels

    def fill_in(self, box: Box, pixels: np.ndarray) -> tuple[np.ndarray, Box] | None:
        if not self.fill:
            return None
        area = self.fill.image_area(self.info.shape)
        if area.contains(box):
            return None
        return replace_fill(self.source.read, box, pixels, area), area_in(area, box)

    def expect_reads(self, many: bool) -> None:
        self.source.expect_reads(many)

    def close(self) -> None:
        self.source.close()
