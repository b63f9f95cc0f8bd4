"""Read and write images: PNG, JPEG, BMP, WebP (OpenCV) and TIFF (tifffile), 8/16-bit, gray/RGB.

Arrays are HxW (gray) or HxWx3 (RGB order) in the file's own dtype. EXIF orientation is applied on
read. A multi-page TIFF is a z-stack: one frame per page. Writes go to a temporary file in the target
folder that is renamed into place, so an output is either complete or absent.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from .errors import InputError, UsageError
from .metadata import ImageMetadata, embed_exif_in_tiff, embed_in_jpeg, embed_in_png, tiff_write_kwargs

READ_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
WRITE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")


def natural_key(name: str) -> list:
    """Sort key that orders ``img2`` before ``img10`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


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


def exif_orientation(path: str | os.PathLike) -> int:
    """EXIF orientation tag (1 when absent or unreadable)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:
        return 1


def _decode_opencv(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{path}: not a readable image (corrupt or unsupported)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    return np.ascontiguousarray(image)


def tiff_page_count(path: str | os.PathLike) -> int:
    """Number of frames in a TIFF (pages of its first series)."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            frame_axes = [ax for ax in series.axes if ax not in "YXS"]
            return int(np.prod([series.shape[series.axes.index(ax)] for ax in frame_axes])) if frame_axes else 1
    except Exception as exc:
        raise InputError(f"{path}: not a readable TIFF ({exc})") from exc


def _read_tiff(path: Path, page: int | None) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray() if page is None else series.asarray(key=page)
    except Exception as exc:
        raise InputError(f"{path}: not a readable TIFF ({str(exc).splitlines()[0]})") from exc
    if page is None and data.ndim >= 3 and data.shape[-1] not in (1, 2, 3, 4):
        data = data.reshape(-1, *data.shape[-2:])[0]
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
        data = np.moveaxis(data, 0, -1)  # planar RGB
    return data


def read_image(path: str | os.PathLike, page: int | None = None) -> np.ndarray:
    """Read one image (or one page of a TIFF) as HxW or HxWxC, RGB order, file dtype, upright."""
    path = Path(path)
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
    """A frame to read lazily: a file, or one page of a multi-page TIFF."""

    path: Path
    page: int | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.page is None else f"{self.path.name}[{self.page}]"

    def read(self) -> np.ndarray:
        return read_image(self.path, self.page)


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[FrameRef]:
    """Folders -> their images (natural order); multi-page TIFFs -> one frame per page; files as given."""
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
    if path.suffix.lower() not in READ_SUFFIXES:
        raise UsageError(f"{path}: unsupported file type (use {', '.join(READ_SUFFIXES)})")
    if path.suffix.lower() in TIFF_SUFFIXES:
        pages = tiff_page_count(path)
        if pages > 1:
            return [FrameRef(path, i) for i in range(pages)]
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


def check_output_path(path: str | os.PathLike, *, overwrite: bool, inputs: Sequence[Path] = ()) -> Path:
    """Refuse unknown extensions, existing files (without ``overwrite``), inputs and missing folders."""
    path = Path(path)
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise UsageError(f"{path}: unknown output type '{path.suffix}' (use {', '.join(WRITE_SUFFIXES)})")
    resolved = path.resolve()
    for inp in inputs:
        if Path(inp).resolve() == resolved:
            raise UsageError(f"{path}: output would overwrite an input")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: exists (pass --overwrite to replace it)")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder")
    if not path.parent.exists():
        raise UsageError(f"{path.parent}: output folder does not exist")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"{path.parent}: output folder is not writable")
    return path


def _encode(path: Path, image: np.ndarray) -> bytes:
    suffix = path.suffix.lower()
    if image.ndim == 3:
        image = image[:, :, ::-1]  # RGB -> BGR for OpenCV
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(suffix, np.ascontiguousarray(image), params)
    if not ok:
        raise InputError(f"{path}: could not encode image")
    return buffer.tobytes()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
    target = output_dtype_for(path, image.dtype)
    if target != image.dtype:
        if image.dtype == np.uint16 and target == np.uint8:
            warnings.warn(f"{path.name}: {suffix} holds 8 bits; 16-bit result reduced to 8-bit", stacklevel=2)
        image = convert_dtype(image, target)
    meta = metadata or ImageMetadata()
    if description is not None:
        meta = dataclasses.replace(meta, description=description)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
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
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
