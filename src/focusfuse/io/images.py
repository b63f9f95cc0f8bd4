"""Read and write images: PNG, JPEG, BMP, WebP (OpenCV) and TIFF (tifffile), 8/16-bit, gray/RGB.

Arrays are HxW (gray) or HxWx3 (RGB order) in the file's own dtype. EXIF orientation is applied on
read. A multi-page TIFF is a z-stack: one frame per page, or per Z plane of an ImageJ hyperstack or
OME-TIFF (C=3 planes make an RGB frame; see :func:`plan_tiff_frames`). Writes go to a temporary
file in the target folder that is renamed into place, so an output is either complete or absent.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import struct
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile

from ..errors import InputError, UsageError
from .metadata import PNG_SIGNATURE, ImageMetadata, embed_exif_in_tiff, embed_in_jpeg, embed_in_png, tiff_write_kwargs

READ_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
WRITE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
TIFF_COMPRESSIONS = (None, "zlib")


def natural_key(name: str) -> list:
    """Sort key that orders ``img2`` before ``img10`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def natural_file_order(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files given one by one, as a shell glob lists them (img1, img10, img2), in natural order; a list
    that holds a folder is kept as given."""
    paths = [Path(p) for p in paths]
    if any(p.is_dir() for p in paths):
        return paths
    return sorted(paths, key=lambda p: natural_key(str(p)))


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in READ_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files in ``folder`` (not recursive), natural-sorted by name."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: natural_key(p.name))


# ---------------------------------------------------------------------------------------------- read

def _apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Undo EXIF orientation 1..8 so the array is upright."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1, :],
        5: lambda x: np.swapaxes(x, 0, 1),
        6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
        7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
        8: lambda x: np.swapaxes(x, 0, 1)[::-1, :],
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(image)) if op else image


@contextmanager
def open_header(path: str | os.PathLike) -> Iterator[Any]:
    """Pillow's lazy view of an image file (header only: no size limit, no decompression-bomb warning)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # nothing is decoded here
        try:
            with Image.open(path) as image:
                yield image
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def tiff_orientation(tif: tifffile.TiffFile) -> int:
    """Orientation tag (274) of an open TIFF's first page (1 when absent)."""
    return int(getattr(tif.pages[0].tags.get(274), "value", 1) or 1)


def exif_orientation(path: str | os.PathLike) -> int:
    """EXIF orientation tag (1 when absent or unreadable)."""
    try:
        if Path(path).suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                return tiff_orientation(tif)
        with open_header(path) as image:
            return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:
        return 1


PNG_GRAY_ALPHA = 4  # IHDR colour type


def png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from the first 26 bytes of a PNG, or None."""
    if len(data) < 26 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">IIBB", data[16:26])


@contextmanager
def _c_stderr_silenced() -> Iterator[None]:
    """Send what C libraries print to stderr (libpng's "PNG input buffer is incomplete") to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decode_opencv(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"{path}: empty file")
    truncated_png = png_header(data[:26].tobytes()) is not None and b"IEND" not in data[-1024:].tobytes()
    with _c_stderr_silenced() if truncated_png else nullcontext():
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{path}: " + ("truncated PNG (the file ends early)" if truncated_png
                                        else "not a readable image (corrupt or unsupported)"))
    header = png_header(data[:26].tobytes())
    if header is not None and header[3] == PNG_GRAY_ALPHA and image.ndim == 3:
        image = image[:, :, [0, 3]]  # OpenCV expands gray + alpha to BGRA: keep (gray, alpha)
    elif image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    return np.ascontiguousarray(image)


# ---------------------------------------------------------------------------------- TIFF z-stacks

@dataclass(frozen=True)
class TiffFrames:
    """Which planes of a TIFF series make each frame of the stack.

    Planes are indexed by the series axes before the page's own (Y, X, samples), in row-major
    order, as ``series.pages`` lists them. Frames run over ``stack_axes`` (row-major); the other
    axes are held at 0 except the channel axis, which takes each of ``channels`` (three planes
    stacked as RGB, or one). ``notes`` say what was left out, for one warning per file.
    """

    shape: tuple[int, ...]
    stack_axes: tuple[int, ...]
    channel_axis: int | None = None
    channels: tuple[int, ...] = (0,)
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return math.prod(self.shape[i] for i in self.stack_axes)

    def planes(self, frame: int) -> tuple[int, ...]:
        """Plane indices of ``frame`` (one per channel); IndexError when there is no such frame."""
        if not 0 <= frame < len(self):
            raise IndexError(f"frame {frame} does not exist ({len(self)} frames)")
        if not self.shape:
            return (0,)
        index = [0] * len(self.shape)
        position = np.unravel_index(frame, [self.shape[i] for i in self.stack_axes])
        for axis, value in zip(self.stack_axes, position):
            index[axis] = int(value)
        planes = []
        for channel in self.channels:
            if self.channel_axis is not None:
                index[self.channel_axis] = channel
            planes.append(int(np.ravel_multi_index(index, self.shape)))
        return tuple(planes)


def plan_tiff_frames(axes: str, shape: Sequence[int], *, rgb_pages: bool = False) -> TiffFrames:
    """Frames of a series whose planes are indexed by ``axes``/``shape`` (the axes before Y, X, S).

    The stack runs along Z when there is a Z axis, else along every non-C axis (a plain multi-page
    TIFF: one frame per page). C of size 3 gives RGB frames (unless the pages are RGB already),
    C of another size gives channel 0. Every other axis (T, ...) is held at index 0.
    """
    shape = tuple(int(n) for n in shape)
    channel = axes.find("C") if "C" in axes else None
    stack = [i for i, ax in enumerate(axes) if ax == "Z"] or [i for i in range(len(axes)) if i != channel]
    notes = [f"using {axes[i]}=0 of {axes[i]}={shape[i]} (the stack runs along {axes[stack[0]]})"
             for i in range(len(axes)) if i not in stack and i != channel and shape[i] > 1]
    channels = _channel_indices(shape[channel] if channel is not None else 1, rgb_pages, notes)
    return TiffFrames(shape, tuple(stack), channel, channels, tuple(notes))


def _channel_indices(size: int, rgb_pages: bool, notes: list[str]) -> tuple[int, ...]:
    """Channels that make a frame: all three of C=3 (as RGB), else channel 0 (noted when C > 1)."""
    if size == 3 and not rgb_pages:
        return (0, 1, 2)
    if size > 1:
        why = "pages are RGB already" if rgb_pages else "only C=3 is read as RGB"
        notes.append(f"fusing channel 0 of C={size} ({why})")
    return (0,)


def stack_series(tif: tifffile.TiffFile) -> tifffile.TiffPageSeries:
    """The series a TIFF's frames are read from: its first, or all its pages when it holds only one-page series
    of one shape and type (pages written one by one, e.g. by ``tifffile.TiffWriter.write`` in a loop, which
    makes each page a series of its own)."""
    series = tif.series
    first = series[0]
    if len(series) < 2 or any(len(s.pages) != 1 or s.shape != first.shape or s.dtype != first.dtype
                              or s.axes != first.axes for s in series):
        return first
    pages = [s.pages[0] for s in series]
    return tifffile.TiffPageSeries(pages, (len(pages), *first.shape), first.dtype, "I" + first.axes, parent=tif,
                                   kind="generic")


def tiff_series_frames(series: tifffile.TiffPageSeries) -> TiffFrames:
    """The frames of a series: its axes before the page's own (Y, X, samples) index the planes."""
    key = series.keyframe
    page_ndim = len(key.shape)
    lead = len(series.shape) - page_ndim
    if lead < 0 or tuple(series.shape[lead:]) != tuple(key.shape):  # unusual shapes: page by page
        return TiffFrames((max(len(series.pages), 1),), (0,))
    return plan_tiff_frames(series.axes[:lead], series.shape[:lead], rgb_pages=key.samplesperpixel > 1)


def tiff_frame_planes(series: tifffile.TiffPageSeries, frame: int) -> tuple[int, ...]:
    """Plane indices of frame ``frame`` of ``series`` (IndexError when there is no such frame)."""
    return tiff_series_frames(series).planes(frame)


def tiff_plane_page(series: tifffile.TiffPageSeries, plane: int) -> tifffile.TiffPage | tifffile.TiffFrame | None:
    """The page that stores ``plane``; None when it has no IFD of its own (truncated ImageJ, missing OME)."""
    return series.pages[plane] if plane < len(series.pages) else None


def _contiguous_plane(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, plane: int) -> np.ndarray:
    """A plane of an uncompressed contiguous series without its own IFD (ImageJ files over 4 GB)."""
    key = series.keyframe
    dtype = np.dtype(key.dtype).newbyteorder(tif.byteorder)
    count = math.prod(key.shape)
    tif.filehandle.seek(series.dataoffset + plane * count * dtype.itemsize)
    raw = tif.filehandle.read(count * dtype.itemsize)
    if len(raw) < count * dtype.itemsize:
        raise ValueError(f"plane {plane} lies beyond the end of the file")
    return np.frombuffer(raw, dtype).reshape(key.shape).astype(key.dtype)


def _read_plane(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, plane: int) -> np.ndarray:
    """One plane as HxW or HxWxS."""
    page = tiff_plane_page(series, plane)
    if page is not None:
        data = page.asarray()
    elif plane >= len(series.pages) and series.dataoffset is not None:
        data = _contiguous_plane(tif, series, plane)
    else:
        raise ValueError(f"plane {plane} is missing from the file")
    if series.keyframe.planarconfig == 2 and data.ndim == 3:
        data = np.moveaxis(data, 0, -1)  # planar RGB
    return data


def tiff_frames(path: str | os.PathLike) -> TiffFrames:
    """The frames of a TIFF's stack series (see :func:`stack_series`, :func:`plan_tiff_frames`)."""
    try:
        with tifffile.TiffFile(path) as tif:
            return tiff_series_frames(stack_series(tif))
    except Exception as exc:
        raise InputError(f"{path}: not a readable TIFF ({str(exc).splitlines()[0]})") from exc


def tiff_page_count(path: str | os.PathLike) -> int:
    """Number of frames in a TIFF: Z planes of a hyperstack / OME-TIFF, else pages of its stack series."""
    return len(tiff_frames(path))


def _read_tiff(path: Path, frame: int | None) -> np.ndarray:
    """Frame ``frame`` (default 0) of a TIFF: one page, or its C pages stacked as RGB."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = stack_series(tif)
            planes = [_read_plane(tif, series, i) for i in tiff_frame_planes(series, frame or 0)]
    except Exception as exc:
        raise InputError(f"{path}: not a readable TIFF ({str(exc).splitlines()[0]})") from exc
    return planes[0] if len(planes) == 1 else np.stack(planes, axis=-1)


def read_image(path: str | os.PathLike, page: int | None = None) -> np.ndarray:
    """Read one image (or one page of a TIFF) as HxW or HxWxC, RGB order, file dtype, upright."""
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"read_image takes a path, not {type(path).__name__}")
    path = Path(path)
    if page not in (None, 0) and path.suffix.lower() not in TIFF_SUFFIXES:
        raise UsageError(f"{path}: only TIFF files have pages (page {page} asked)")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        image = _read_tiff(path, page)
    else:
        image = _decode_opencv(path)
    orientation = exif_orientation(path) if path.suffix.lower() in (".jpg", ".jpeg", ".tif", ".tiff",
                                                                    ".png", ".webp") else 1
    image = _apply_exif_orientation(image, orientation)
    if image.size == 0:
        raise InputError(f"{path}: image has no pixels")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InputError(f"{path}: image contains NaN or infinite values")
    return image


# -------------------------------------------------------------------------------------- frame lists

@dataclass(frozen=True)
class FrameRef:
    """A frame to read lazily: a file, or frame ``page`` of a TIFF stack.

    ``page`` counts frames, not IFDs: the Z index of an ImageJ hyperstack or OME-TIFF (whose frame
    may be made of several pages, one per channel), else the page of a plain multi-page TIFF.
    """

    path: Path
    page: int | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.page is None else f"{self.path.name}[{self.page}]"

    def read(self) -> np.ndarray:
        return read_image(self.path, self.page)


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[FrameRef]:
    """Folders -> their images (natural order); TIFF stacks -> one frame per Z plane/page; files as given."""
    frames: list[FrameRef] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if path.is_dir():
            images = list_images(path)
            if not images:
                raise UsageError(f"{path}: folder holds no images ({', '.join(READ_SUFFIXES)})")
            for image in images:
                frames.extend(_file_frames(image))
        else:
            frames.extend(_file_frames(path))
    return frames


def _file_frames(path: Path) -> list[FrameRef]:
    """One frame per file; a TIFF stack gives one per frame (warning once about what it leaves out)."""
    if path.suffix.lower() not in READ_SUFFIXES:
        raise UsageError(f"{path}: unsupported file type (use {', '.join(READ_SUFFIXES)})")
    if path.suffix.lower() in TIFF_SUFFIXES:
        frames = tiff_frames(path)
        for note in frames.notes:
            warnings.warn(f"{path.name}: {note}", stacklevel=4)
        if len(frames) > 1:
            return [FrameRef(path, i) for i in range(len(frames))]
    return [FrameRef(path)]


# --------------------------------------------------------------------------------------------- write

def output_dtype_for(path: str | os.PathLike, dtype: np.dtype) -> np.dtype:
    """The dtype an image of ``dtype`` is stored as in ``path``'s format."""
    suffix = Path(path).suffix.lower()
    dtype = np.dtype(dtype)
    if suffix in EIGHT_BIT_ONLY:
        return np.dtype(np.uint8)
    if suffix == ".png" and dtype.kind == "f":
        return np.dtype(np.uint16)
    return dtype


def convert_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rescale between uint8, uint16 and float [0, 1]."""
    dtype = np.dtype(dtype)
    if image.dtype == dtype:
        return image
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
    x = image.astype(np.float64) / scale.get(image.dtype, 1.0)
    if dtype.kind == "f":
        return x.astype(dtype)
    return np.round(np.clip(x, 0.0, 1.0) * scale[dtype]).astype(dtype)


def check_output_file(path: str | os.PathLike, *, overwrite: bool, inputs: Sequence[Path] = ()) -> Path:
    """Refuse outputs that are inputs, folders, existing files (without ``overwrite``), or in a missing or
    read-only folder."""
    path = Path(path)
    resolved = path.resolve()
    for inp in inputs:
        if Path(inp).resolve() == resolved:
            raise UsageError(f"{path}: output would overwrite an input")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder (give a file name)")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: exists (allow overwriting to replace it)", option="overwrite")
    check_output_folder(path.parent, create=False)
    return path


def check_output_folder(folder: str | os.PathLike, *, create: bool) -> Path:
    """Refuse an output folder that is a file, is read-only, or (unless ``create``) does not exist; with
    ``create``, make it and its parents."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: is a file, not a folder")
    if not folder.exists():
        if not create:
            raise UsageError(f"{folder}: output folder does not exist")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from exc
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{folder}: output folder is not writable")
    return folder


def check_output_path(path: str | os.PathLike, *, overwrite: bool, inputs: Sequence[Path] = ()) -> Path:
    """:func:`check_output_file` for images: also refuse extensions we cannot write."""
    path = Path(path)
    if path.suffix.lower() not in WRITE_SUFFIXES:
        if path.is_dir():
            raise UsageError(f"{path}: is a folder (give a file name such as {path / 'fused.tif'})")
        raise UsageError(f"{path}: unknown output type '{path.suffix}' (use {', '.join(WRITE_SUFFIXES)})")
    return check_output_file(path, overwrite=overwrite, inputs=inputs)


def _encode(path: Path, image: np.ndarray) -> bytes:
    suffix = path.suffix.lower()
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[:, :, [2, 1, 0, 3][: image.shape[2]]]  # RGB(A) -> BGR(A) for OpenCV
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(suffix, np.ascontiguousarray(image), params)
    if not ok:
        raise InputError(f"{path}: could not encode image")
    return buffer.tobytes()


def partial_path(path: Path) -> Path:
    """Hidden temporary name next to ``path`` under which an output is written before its rename."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def final_name(path: Path) -> str:
    """The file name ``path`` will have once renamed: the inverse of :func:`partial_path` on names."""
    match = re.fullmatch(r"\.(.*)\.partial-\d+(\.[^.]*)?", path.name)
    return f"{match[1]}{match[2] or ''}" if match else path.name


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)`` in the target folder, then rename onto ``path``; nothing is left
    behind on failure."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file through a temporary file and a rename."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_compression(compression: str | None) -> None:
    """Refuse a TIFF compression other than none or zlib (others need packages focusfuse does not require)."""
    if compression not in TIFF_COMPRESSIONS:
        raise UsageError(f"compression {compression!r}: use None or 'zlib'", option="compression")


def write_image(path: str | os.PathLike, image: np.ndarray, *, compression: str | None = None,
                description: str | None = None, metadata: ImageMetadata | None = None) -> Path:
    """Write by extension, keeping the dtype where the format allows it; atomic (temp file + rename).

    ``metadata`` (EXIF, ICC profile, resolution) of a reference frame is embedded in PNG, JPEG and TIFF
    outputs; ``description`` notes how the image was made.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise UsageError(f"{path}: unknown output type '{path.suffix}' (use {', '.join(WRITE_SUFFIXES)})")
    if not isinstance(image, np.ndarray):
        raise UsageError(f"{final_name(path)}: write_image takes a numpy array, not {type(image).__name__}")
    if image.size == 0:
        raise UsageError(f"{final_name(path)}: the image has no pixels (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]  # HxWx1: one channel, as HxW in every format
    if image.dtype.kind == "f" and not all(np.isfinite(image[y:y + 256]).all() for y in range(0, len(image), 256)):
        raise UsageError(f"{final_name(path)}: the image contains NaN or infinite values")  # checked in bands: no copy
    if image.dtype not in (np.uint8, np.uint16) and image.dtype.kind != "f":
        raise UsageError(f"{final_name(path)}: cannot write pixels of type {image.dtype} (use uint8, uint16 or float)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):  # HxWx1 made HxW above
        raise UsageError(f"{final_name(path)}: cannot write an image of shape {image.shape} (use HxW, HxWx3 or "
                         "HxWx4)")
    check_compression(compression)
    target = output_dtype_for(path, image.dtype)
    if target != image.dtype:
        if target == np.uint8 and (image.dtype == np.uint16 or image.dtype.kind == "f"):
            depth = "16-bit" if image.dtype == np.uint16 else "float"
            warnings.warn(f"{final_name(path)}: {suffix} holds 8 bits; {depth} result reduced to 8-bit", stacklevel=2)
        image = convert_dtype(image, target)
    meta = metadata or ImageMetadata()
    if description is not None:
        meta = dataclasses.replace(meta, description=description)

    def write(tmp: Path) -> None:
        if suffix in TIFF_SUFFIXES:
            photometric = "rgb" if image.ndim == 3 else "minisblack"
            channels = image.shape[2] if image.ndim == 3 else 1
            tifffile.imwrite(tmp, image, photometric=photometric, compression=compression, metadata=None,
                             **tiff_write_kwargs(meta, channels=channels))
            embed_exif_in_tiff(tmp, meta)
        else:
            data = _encode(path, image)
            if suffix == ".png":
                data = embed_in_png(data, meta)
            elif suffix in (".jpg", ".jpeg"):
                data = embed_in_jpeg(data, meta)
            tmp.write_bytes(data)

    return atomic_write(path, write)
