"""Carry the metadata of a reference frame (EXIF, ICC profile, resolution, description) into outputs.

Reading (:func:`read_metadata`): JPEG (APP1 Exif, APP2 ICC_PROFILE in one or more chunks, JFIF
density, COM), PNG (eXIf, iCCP, pHYs, 'Description' text, ImageMagick 'Raw profile type exif'),
TIFF (ICC tag 34675, resolution, ImageDescription, Make/Model/... and the EXIF and GPS IFDs) and
WebP (RIFF 'EXIF' and 'ICCP' chunks). The file type is recognised from its first bytes.

Physical pixel size (TIFF only, :func:`tiff_physical_size`): ImageJ (X/YResolution in the unit of
the ImageJ description, 'spacing' for Z), OME-XML (PhysicalSizeX/Y/Z and their units, default µm),
else X/YResolution with ResolutionUnit inch or centimetre (centimetres are given in µm). TIFF
outputs carry it as pixels per centimetre with ResolutionUnit CENTIMETER (per inch for inches) and
as a "pixel size ..." line appended to the description.

Writing works on bytes an encoder already produced, so pixels are never re-encoded:
:func:`embed_in_jpeg` and :func:`embed_in_png` insert segments/chunks into ``cv2.imencode``
output; TIFF takes :func:`tiff_write_kwargs` for ``tifffile.imwrite`` and then
:func:`embed_exif_in_tiff`, which appends a real EXIF sub-IFD (tifffile cannot write one).

EXIF blobs are TIFF-structured (``II*\\0`` or ``MM\\0*``, no ``Exif\\0\\0`` prefix) and are patched
in place, so every other byte (maker notes included) is kept: Orientation becomes 1 (pixels are
upright after :func:`focusfuse.io.images.read_image`), the IFD1 thumbnail is unlinked (and cut off when
it ends the block), and ImageWidth/ImageLength/PixelXDimension/PixelYDimension follow the output.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from xml.etree import ElementTree

import numpy as np
import tifffile

EXIF_PREFIX = b"Exif\x00\x00"
ICC_MARKER = b"ICC_PROFILE\x00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_EXIF_MAX = 65535 - 2 - len(EXIF_PREFIX)  # APP1 payload limit
JPEG_ICC_CHUNK = 65535 - 2 - len(ICC_MARKER) - 2  # 65519 profile bytes per APP2 segment
INFLATE_LIMIT = 1 << 26  # refuse compressed PNG chunks that inflate beyond 64 MiB

ORIENTATION, EXIF_IFD, GPS_IFD, INTEROP_IFD, MAKERNOTE = 274, 34665, 34853, 40965, 37500
DATETIME, DATETIME_ORIGINAL, SOFTWARE = 306, 36867, 305
BASELINE_TEXT_TAGS = (271, 272, 315, 33432)  # Make, Model, Artist, Copyright
TIFF_IFD0_CARRIED = frozenset((271, 272, 282, 283, 296, 305, 306, 315, 33432))
NOT_PORTABLE = frozenset((INTEROP_IFD, MAKERNOTE))  # offsets inside would dangle once moved
DIMENSION_PAIRS = ((256, 257), (40962, 40963))  # IFD0 ImageWidth/Length, Exif PixelX/YDimension
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
SWAP_UNITS = {3: 2, 4: 4, 5: 4, 8: 2, 9: 4, 10: 4, 11: 4, 12: 8, 13: 4}
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> channels
TIFF_DESCRIPTION_SKIP = ("ImageJ=", "<?xml", "<OME", "{", "shape=")  # machine-readable, not prose
DATETIME_FORMAT = re.compile(r"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d")
CENTIMETRES_PER_UNIT = {"pm": 1e-10, "Å": 1e-8, "nm": 1e-7, "µm": 1e-4, "mm": 0.1, "cm": 1.0, "m": 100.0,
                        "inch": 2.54}
UNIT_ALIASES = {"micron": "µm", "microns": "µm", "um": "µm", "μm": "µm", "\\u00b5m": "µm", "micrometer": "µm",
                "micrometre": "µm", "micrometers": "µm", "micrometres": "µm", "nanometer": "nm",
                "nanometre": "nm", "millimeter": "mm", "millimetre": "mm", "centimeter": "cm",
                "centimetre": "cm", "meter": "m", "metre": "m", "in": "inch", "inches": "inch",
                "angstrom": "Å", "\u212b": "Å", "picometer": "pm", "picometre": "pm"}
ASCII_UNITS = {"µm": "um", "Å": "Angstrom"}  # TIFF text is 7-bit ASCII

TagValue = tuple[int, int, int, bytes]  # (tag, TIFF type, count, value bytes in the target order)


@dataclass
class ImageMetadata:
    """Metadata to carry from a reference frame into an output image.

    ``exif`` is a TIFF-structured EXIF block with Orientation 1; ``resolution`` is pixels per
    ``resolution_unit`` (TIFF ResolutionUnit: 2 inch, 3 centimetre) along x and y. ``pixel_size``
    (TIFF inputs only) is the calibrated size of a pixel in ``pixel_unit``; when set it decides
    the resolution written to outputs.
    """

    exif: bytes | None = None
    icc_profile: bytes | None = None
    description: str | None = None
    resolution: tuple[float, float] | None = None
    resolution_unit: int | None = None
    pixel_size: tuple[float, float] | None = None  # physical size of a pixel along x and y ...
    pixel_unit: str | None = None  # ... in this unit (a key of CENTIMETRES_PER_UNIT: 'µm', 'nm', 'inch', ...)

    def is_empty(self) -> bool:
        """True when there is nothing to embed."""
        return not (self.exif or self.icc_profile or self.description or self.resolution or self.pixel_size)


# ------------------------------------------------------------------------------------- EXIF walker

@dataclass(frozen=True)
class _Entry:
    """One IFD entry: where it is and where its value bytes are."""

    tag: int
    type: int
    count: int
    pos: int  # offset of the 12-byte entry
    data_pos: int  # offset of the value (inside the entry when it fits in 4 bytes)
    size: int  # value length in bytes


@dataclass(frozen=True)
class _Ifd:
    offset: int
    entries: dict[int, _Entry]
    next_pos: int  # offset of the 4-byte next-IFD pointer


@dataclass(frozen=True)
class _Layout:
    """The IFDs of an EXIF block (or of a classic TIFF file's first page)."""

    endian: str
    ifd0: _Ifd
    exif: _Ifd | None
    gps: _Ifd | None
    interop: _Ifd | None
    ifd1: _Ifd | None


def _split_prefix(exif: bytes) -> tuple[bytes, bytes]:
    """(``Exif\\0\\0`` or empty, the TIFF-structured rest)."""
    return (EXIF_PREFIX, exif[6:]) if exif[:6] == EXIF_PREFIX else (b"", exif)


def _tiff_header(buf: Any) -> tuple[str, int]:
    """Byte order ('<' or '>') and first-IFD offset of a classic TIFF structure."""
    mark = bytes(buf[:4])
    if len(buf) < 8 or mark not in (b"II*\x00", b"MM\x00*"):
        raise ValueError("not a classic TIFF-structured block (expected 'II*\\0' or 'MM\\0*')")
    endian = "<" if mark[:2] == b"II" else ">"
    return endian, struct.unpack_from(endian + "I", buf, 4)[0]


def _read_entry(buf: Any, pos: int, endian: str) -> _Entry | None:
    """The entry at ``pos``; None for unknown types or values outside the block."""
    tag, kind, count = struct.unpack_from(endian + "HHI", buf, pos)
    unit = TYPE_SIZES.get(kind)
    if unit is None:
        return None
    size, data_pos = unit * count, pos + 8
    if size > 4:
        data_pos = struct.unpack_from(endian + "I", buf, pos + 8)[0]
        if data_pos + size > len(buf):
            return None
    return _Entry(tag, kind, count, pos, data_pos, size)


def _read_ifd(buf: Any, offset: int, endian: str) -> _Ifd:
    """Parse the IFD at ``offset`` (bounds-checked; raises ValueError when it does not fit)."""
    if offset < 8 or offset + 2 > len(buf):
        raise ValueError(f"IFD offset {offset} lies outside the block")
    count = struct.unpack_from(endian + "H", buf, offset)[0]
    next_pos = offset + 2 + 12 * count
    if next_pos + 4 > len(buf):
        raise ValueError(f"IFD at {offset} is truncated")
    entries: dict[int, _Entry] = {}
    for index in range(count):
        entry = _read_entry(buf, offset + 2 + 12 * index, endian)
        if entry is not None:
            entries.setdefault(entry.tag, entry)
    return _Ifd(offset, entries, next_pos)


def _uint(buf: Any, entry: _Entry | None, endian: str) -> int | None:
    """First value of a SHORT/LONG/IFD entry, else None."""
    fmt = {3: "H", 4: "I", 13: "I"}.get(entry.type) if entry is not None else None
    if fmt is None or entry.count < 1:
        return None
    return struct.unpack_from(endian + fmt, buf, entry.data_pos)[0]


def _child(buf: Any, parent: _Ifd | None, tag: int, endian: str) -> _Ifd | None:
    """The sub-IFD that ``tag`` of ``parent`` points to; None when absent or unreadable."""
    entry = parent.entries.get(tag) if parent is not None else None
    offset = _uint(buf, entry, endian) if entry is not None and entry.count == 1 else None
    if not offset:
        return None
    try:
        return _read_ifd(buf, offset, endian)
    except ValueError:
        return None


def _next_offset(buf: Any, ifd: _Ifd, endian: str) -> int:
    return struct.unpack_from(endian + "I", buf, ifd.next_pos)[0]


def _layout(buf: Any) -> _Layout:
    """Walk IFD0, its Exif/GPS sub-IFDs, the Interop IFD and IFD1."""
    endian, first = _tiff_header(buf)
    ifd0 = _read_ifd(buf, first, endian)
    exif = _child(buf, ifd0, EXIF_IFD, endian)
    ifd1 = None
    if _next_offset(buf, ifd0, endian):
        try:
            ifd1 = _read_ifd(buf, _next_offset(buf, ifd0, endian), endian)
        except ValueError:
            ifd1 = None
    return _Layout(endian, ifd0, exif, _child(buf, ifd0, GPS_IFD, endian),
                   _child(buf, exif, INTEROP_IFD, endian), ifd1)


def _set_uint(buf: bytearray, entry: _Entry, value: int, endian: str) -> None:
    """Rewrite ``entry`` in place as one inline SHORT (or LONG when ``value`` needs it)."""
    if value <= 0xFFFF:
        struct.pack_into(endian + "HIHH", buf, entry.pos + 2, 3, 1, value, 0)
    else:
        struct.pack_into(endian + "HII", buf, entry.pos + 2, 4, 1, value)


def _ascii(buf: Any, entry: _Entry | None) -> bytes | None:
    """The text of an ASCII entry up to its first NUL, stripped; None when empty or not ASCII."""
    if entry is None or entry.type != 2:
        return None
    text = bytes(buf[entry.data_pos:entry.data_pos + entry.size]).split(b"\x00", 1)[0].strip()
    return text or None


def _rational(buf: Any, entry: _Entry | None, endian: str) -> float | None:
    if entry is None or entry.type != 5:
        return None
    numerator, denominator = struct.unpack_from(endian + "II", buf, entry.data_pos)
    return numerator / denominator if denominator and numerator else None


# ------------------------------------------------------------------------------ EXIF patching (API)

def normalize_orientation(exif: bytes) -> bytes:
    """Set Orientation (274) in IFD0 to 1, keeping every other byte; raises ValueError on non-TIFF data.

    A leading ``Exif\\0\\0`` is kept when present. A block without an Orientation tag is returned as is.
    """
    prefix, body = _split_prefix(exif)
    buf = bytearray(body)
    endian, first = _tiff_header(buf)
    entry = _read_ifd(buf, first, endian).entries.get(ORIENTATION)
    if entry is not None:
        _set_uint(buf, entry, 1, endian)
    return prefix + bytes(buf)


def prepare_exif(exif: bytes, size: tuple[int, int] | None = None) -> bytes:
    """Make an EXIF block describe an upright output: Orientation 1, no thumbnail, right dimensions.

    ``size`` is the output's (width, height): ImageWidth/ImageLength and PixelXDimension/
    PixelYDimension that exist are set to it. Without ``size`` they are swapped when the old
    orientation (5..8) transposed the image. The result has no ``Exif\\0\\0`` prefix. Raises
    ValueError when ``exif`` is not a TIFF-structured block.
    """
    buf = bytearray(_split_prefix(exif)[1])
    layout = _layout(buf)
    orientation = layout.ifd0.entries.get(ORIENTATION)
    transposed = _uint(buf, orientation, layout.endian) in (5, 6, 7, 8)
    _set_dimensions(buf, layout, size, transposed)
    if orientation is not None:
        _set_uint(buf, orientation, 1, layout.endian)
    return bytes(_drop_thumbnail(buf, layout))


def _set_dimensions(buf: bytearray, layout: _Layout, size: tuple[int, int] | None,
                    transposed: bool) -> None:
    """Set (or, for a transposing orientation, swap) the width/height tags that are present."""
    for ifd, tags in zip((layout.ifd0, layout.exif), DIMENSION_PAIRS):
        if ifd is None:
            continue
        entries = [ifd.entries.get(tag) for tag in tags]
        values = size if size is not None else _swapped(buf, entries, layout.endian) if transposed else None
        for entry, value in zip(entries, values or ()):
            if entry is not None:
                _set_uint(buf, entry, int(value), layout.endian)


def _swapped(buf: Any, entries: list[_Entry | None], endian: str) -> tuple[int, int] | None:
    width, height = (_uint(buf, entry, endian) for entry in entries)
    return (height, width) if width and height else None


def _drop_thumbnail(buf: bytearray, layout: _Layout) -> bytearray:
    """Unlink IFD1 (the thumbnail shows the old framing); cut it off when nothing else follows."""
    if not _next_offset(buf, layout.ifd0, layout.endian):
        return buf
    struct.pack_into(layout.endian + "I", buf, layout.ifd0.next_pos, 0)
    start = _thumbnail_start(buf, layout)
    if start is not None and start >= _used_end(layout):
        del buf[start:]
    return buf


def _thumbnail_start(buf: Any, layout: _Layout) -> int | None:
    """Lowest offset used by IFD1, its values and its JPEG thumbnail."""
    ifd1 = layout.ifd1
    if ifd1 is None:
        return None
    starts = [ifd1.offset] + [e.data_pos for e in ifd1.entries.values() if e.size > 4]
    thumbnail = _uint(buf, ifd1.entries.get(513), layout.endian)
    return min(starts + ([thumbnail] if thumbnail else []))


def _used_end(layout: _Layout) -> int:
    """End of the bytes IFD0, Exif, GPS and Interop IFDs (and their values) occupy."""
    ends = [8]
    for ifd in (layout.ifd0, layout.exif, layout.gps, layout.interop):
        if ifd is not None:
            ends.append(ifd.next_pos + 4)
            ends.extend(e.data_pos + e.size for e in ifd.entries.values())
    return max(ends)


def _clean_exif(raw: bytes | None) -> bytes | None:
    """:func:`prepare_exif` for read blocks; None when absent or unreadable."""
    if not raw:
        return None
    try:
        return prepare_exif(raw)
    except (ValueError, struct.error):
        return None


def _embeddable_exif(exif: bytes | None, size: tuple[int, int] | None) -> bytes | None:
    """Prepared EXIF for an output of ``size``; warns and gives None when it cannot be used."""
    if not exif:
        return None
    try:
        return prepare_exif(exif, size)
    except (ValueError, struct.error) as exc:
        warnings.warn(f"EXIF not embedded: {exc}", stacklevel=3)
        return None


# ------------------------------------------------------------------------- EXIF re-serialisation

def _swap(raw: bytes, kind: int) -> bytes:
    """Value bytes of TIFF type ``kind`` in the other byte order."""
    unit = SWAP_UNITS.get(kind)
    return np.frombuffer(raw, dtype=f"u{unit}").byteswap().tobytes() if unit else raw


def _portable_entries(buf: Any, ifd: _Ifd, endian: str, target: str, *,
                      only: frozenset[int] | None = None,
                      skip: frozenset[int] = frozenset()) -> list[TagValue]:
    """The entries of ``ifd`` as (tag, type, count, value) in byte order ``target``."""
    values = []
    for entry in ifd.entries.values():
        if entry.tag in skip or entry.type == 13 or (only is not None and entry.tag not in only):
            continue
        raw = bytes(buf[entry.data_pos:entry.data_pos + entry.size])
        value = raw if endian == target else _swap(raw, entry.type)
        values.append((entry.tag, entry.type, entry.count, value))
    return values


def _children(buf: Any, layout: _Layout, target: str) -> dict[int, list[TagValue]]:
    """Exif and GPS sub-IFD entries in byte order ``target`` (maker note and interop dropped)."""
    children = {}
    for tag, ifd in ((EXIF_IFD, layout.exif), (GPS_IFD, layout.gps)):
        if ifd is not None:
            children[tag] = _portable_entries(buf, ifd, layout.endian, target, skip=NOT_PORTABLE)
    return {tag: values for tag, values in children.items() if values}


def _ifd_size(values: list[TagValue]) -> int:
    return 6 + 12 * len(values) + sum(len(v) + len(v) % 2 for *_, v in values if len(v) > 4)


def _pack_ifd(values: list[TagValue], start: int, endian: str, next_offset: int = 0) -> bytes:
    """One IFD placed at file offset ``start`` (even), long values right after its table."""
    values = sorted(values)
    table = bytearray(struct.pack(endian + "H", len(values)))
    data = bytearray()
    data_start = start + 6 + 12 * len(values)
    for tag, kind, count, value in values:
        if len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            field = struct.pack(endian + "I", data_start + len(data))
            data += value + b"\x00" * (len(value) % 2)
        table += struct.pack(endian + "HHI", tag, kind, count) + field
    return bytes(table + struct.pack(endian + "I", next_offset) + data)


def _pack_children(children: dict[int, list[TagValue]], start: int,
                   endian: str) -> tuple[bytes, list[TagValue]]:
    """Child IFDs laid out from ``start`` and the pointer entries that link them."""
    blob, pointers = b"", []
    for tag, values in children.items():
        pointers.append((tag, 4, 1, struct.pack(endian + "I", start + len(blob))))
        blob += _pack_ifd(values, start + len(blob), endian)
    return blob, pointers


def _pack_exif(endian: str, ifd0: list[TagValue], children: dict[int, list[TagValue]]) -> bytes:
    """A TIFF-structured EXIF block: header, IFD0, then its child IFDs."""
    ifd0 = [value for value in ifd0 if value[0] not in children]
    tail, pointers = _pack_children(children, 8 + _ifd_size(ifd0) + 12 * len(children), endian)
    head = (b"II*\x00" if endian == "<" else b"MM\x00*") + struct.pack(endian + "I", 8)
    return head + _pack_ifd(ifd0 + pointers, 8, endian) + tail


# -------------------------------------------------------------------------------------- ICC, text

def _valid_icc(profile: bytes | None) -> bytes | None:
    """``profile`` when it looks like an ICC profile (header with 'acsp'), else None."""
    return profile if profile and len(profile) >= 128 and profile[36:40] == b"acsp" else None


def _icc_for(profile: bytes | None, channels: int | None) -> bytes | None:
    """The profile when its colour space fits an image of ``channels`` (warns when it does not)."""
    if not profile or channels is None:
        return profile or None
    wanted = b"GRAY" if channels in (1, 2) else b"RGB "
    if profile[16:20] != wanted:
        warnings.warn(f"ICC profile ({profile[16:20].decode('latin-1').strip()}) does not fit a "
                      f"{channels}-channel image; not embedded", stacklevel=3)
        return None
    return profile


def _decode_text(raw: bytes) -> str | None:
    """UTF-8 (else Latin-1) text without NULs and outer blanks; None when empty."""
    raw = raw.replace(b"\x00", b"")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.strip() or None


def _dpi(meta: ImageMetadata) -> tuple[float, float] | None:
    """Resolution in pixels per inch, when it has a physical unit."""
    resolution, unit = output_resolution(meta)
    factor = {2: 1.0, 3: 2.54}.get(unit or 2)
    if not resolution or factor is None:
        return None
    return resolution[0] * factor, resolution[1] * factor


def _exif_resolution(exif: bytes | None) -> tuple[tuple[float, float] | None, int | None]:
    """X/YResolution and ResolutionUnit from IFD0 of an EXIF block."""
    if not exif:
        return None, None
    layout = _layout(exif)
    entries = layout.ifd0.entries
    x = _rational(exif, entries.get(282), layout.endian)
    y = _rational(exif, entries.get(283), layout.endian)
    if not x or not y:
        return None, None
    unit = _uint(exif, entries.get(296), layout.endian) or 2
    return ((x, y), unit) if unit in (2, 3) else (None, None)


# ------------------------------------------------------------------------------------------ JPEG

@dataclass(frozen=True)
class _Segment:
    marker: int
    start: int  # offset of the marker (fill bytes included)
    end: int
    payload: bytes


def _next_marker(stream: BinaryIO) -> int | None:
    byte = stream.read(1)
    if byte != b"\xff":
        return None
    while byte == b"\xff":
        byte = stream.read(1)
    return byte[0] if byte else None


def _jpeg_segments(stream: BinaryIO) -> Iterator[_Segment]:
    """The marker segments before the scan data (SOS); stops quietly at damage."""
    if stream.read(2) != b"\xff\xd8":
        return
    while True:
        start = stream.tell()
        marker = _next_marker(stream)
        if marker is None or marker in (0xDA, 0xD9):
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        raw = stream.read(2)
        length = int.from_bytes(raw, "big") if len(raw) == 2 else 0
        payload = stream.read(max(length - 2, 0))
        if length < 2 or len(payload) < length - 2:
            return
        yield _Segment(marker, start, stream.tell(), payload)


def _is_exif(segment: _Segment) -> bool:
    return segment.marker == 0xE1 and segment.payload.startswith(EXIF_PREFIX)


def _is_icc(segment: _Segment) -> bool:
    return segment.marker == 0xE2 and segment.payload.startswith(ICC_MARKER)


def _is_jfif(segment: _Segment) -> bool:
    return segment.marker == 0xE0 and segment.payload.startswith(b"JFIF\x00") and len(segment.payload) >= 12


def _join_icc(payloads: list[bytes]) -> bytes | None:
    """Reassemble an ICC profile from APP2 payloads (sequence numbers 1..count, any order)."""
    chunks = {p[12]: p[14:] for p in payloads if len(p) >= 14}
    totals = {p[13] for p in payloads if len(p) >= 14}
    if not chunks or len(totals) != 1 or sorted(chunks) != list(range(1, totals.pop() + 1)):
        return None
    return _valid_icc(b"".join(chunks[n] for n in sorted(chunks)))


def _jfif_resolution(segments: list[_Segment]) -> tuple[tuple[float, float] | None, int | None]:
    jfif = next((s for s in segments if _is_jfif(s)), None)
    if jfif is None:
        return None, None
    units, x, y = struct.unpack(">BHH", jfif.payload[7:12])
    if units not in (1, 2) or not x or not y:
        return None, None
    return (float(x), float(y)), 2 if units == 1 else 3


def _read_jpeg(stream: BinaryIO) -> ImageMetadata:
    segments = list(_jpeg_segments(stream))
    exif = _clean_exif(next((s.payload[6:] for s in segments if _is_exif(s)), None))
    icc = _join_icc([s.payload for s in segments if _is_icc(s)])
    comment = next((_decode_text(s.payload) for s in segments if s.marker == 0xFE), None)
    resolution, unit = _exif_resolution(exif)
    if resolution is None:
        resolution, unit = _jfif_resolution(segments)
    return ImageMetadata(exif, icc, comment, resolution, unit)


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_frame(segments: list[_Segment]) -> tuple[tuple[int, int] | None, int | None]:
    """((width, height), components) from the SOF segment."""
    frame = next((s for s in segments if s.marker in SOF_MARKERS and len(s.payload) >= 6), None)
    if frame is None:
        return None, None
    _, height, width, components = struct.unpack(">BHHB", frame.payload[:6])
    return (width, height), components


def _jpeg_exif_segment(exif: bytes | None) -> bytes:
    if exif is None:
        return b""
    if len(exif) > JPEG_EXIF_MAX:
        warnings.warn(f"EXIF block of {len(exif)} bytes exceeds a JPEG APP1 segment; not embedded",
                      stacklevel=3)
        return b""
    return _jpeg_segment(0xE1, EXIF_PREFIX + exif)


def _jpeg_icc_segments(profile: bytes | None) -> bytes:
    """APP2 'ICC_PROFILE' segments, the profile split into chunks of at most 65519 bytes."""
    if not profile:
        return b""
    chunks = [profile[i:i + JPEG_ICC_CHUNK] for i in range(0, len(profile), JPEG_ICC_CHUNK)]
    if len(chunks) > 255:
        warnings.warn("ICC profile too large for JPEG (more than 255 segments); not embedded", stacklevel=3)
        return b""
    return b"".join(_jpeg_segment(0xE2, ICC_MARKER + bytes((n, len(chunks))) + chunk)
                    for n, chunk in enumerate(chunks, start=1))


def _jpeg_comment(text: str | None) -> bytes:
    if not text:
        return b""
    encoded = text.replace("\x00", "").encode("utf-8")[:65533].decode("utf-8", "ignore").encode("utf-8")
    return _jpeg_segment(0xFE, encoded)


def _patch_jfif_density(head: bytearray, jfif: _Segment, meta: ImageMetadata) -> None:
    """Write the resolution as dots per inch into the JFIF APP0 segment that ``head`` ends with."""
    dpi = _dpi(meta)
    if dpi is None or max(dpi) > 0xFFFF:  # beyond a JFIF density (under ~0.39 µm): leave it as encoded
        return
    x, y = (max(round(value), 1) for value in dpi)
    struct.pack_into(">BHH", head, jfif.end - len(jfif.payload) + 7, 1, x, y)


def _without(data: bytes, start: int, spans: list[Any]) -> list[memoryview]:
    """``data[start:]`` as pieces that leave out ``spans`` (objects with start/end, in order)."""
    view, pieces, cursor = memoryview(data), [], start
    for span in spans:
        if span.start >= cursor:
            pieces.append(view[cursor:span.start])
            cursor = span.end
    pieces.append(view[cursor:])
    return pieces


def embed_in_jpeg(data: bytes, meta: ImageMetadata) -> bytes:
    """Insert EXIF (APP1), ICC (APP2 chunks) and a COM description after SOI / the JFIF APP0.

    Segments of the same kinds already present are replaced; the JFIF density is set from
    ``meta.resolution``. The entropy-coded data are untouched. Returns ``data`` itself when
    ``meta`` is empty; raises ValueError when ``data`` is not a JPEG stream.
    """
    if meta.is_empty():
        return data
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    segments = list(_jpeg_segments(io.BytesIO(data)))
    size, components = _jpeg_frame(segments)
    new = {0xE1: _jpeg_exif_segment(_embeddable_exif(meta.exif, size)),
           0xE2: _jpeg_icc_segments(_icc_for(meta.icc_profile, components)),
           0xFE: _jpeg_comment(meta.description)}
    jfif = segments[0] if segments and _is_jfif(segments[0]) else None
    head = bytearray(data[:jfif.end if jfif else 2])
    if jfif is not None:
        _patch_jfif_density(head, jfif, meta)
    replaced = [s for s in segments if new.get(s.marker) and (_is_exif(s) or _is_icc(s) or s.marker == 0xFE)]
    return b"".join([bytes(head), *new.values(), *_without(data, len(head), replaced)])


# ------------------------------------------------------------------------------------------- PNG

@dataclass(frozen=True)
class _Chunk:
    type: bytes
    start: int
    end: int
    data: bytes | None  # None for IDAT (skipped) and for chunks with a bad CRC


def _png_chunks(stream: BinaryIO) -> Iterator[_Chunk]:
    """The chunks of a PNG stream, image data skipped; stops quietly at damage."""
    if stream.read(8) != PNG_SIGNATURE:
        return
    while True:
        start = stream.tell()
        head = stream.read(8)
        if len(head) < 8:
            return
        length, kind = struct.unpack(">I4s", head)
        data = None
        if kind == b"IDAT":
            stream.seek(length + 4, io.SEEK_CUR)
        else:
            data, crc = stream.read(length), stream.read(4)
            if len(crc) < 4:
                return
            data = data if zlib.crc32(kind + data) == int.from_bytes(crc, "big") else None
        yield _Chunk(kind, start, start + 12 + length, data)
        if kind == b"IEND":
            return


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, INFLATE_LIMIT)
    if inflater.unconsumed_tail:
        raise ValueError("compressed chunk inflates beyond the limit")
    return out


def _png_iccp(data: bytes) -> bytes | None:
    _, sep, rest = data.partition(b"\x00")
    if not sep or rest[:1] != b"\x00":
        return None
    return _valid_icc(_inflate(rest[1:]))


def _png_phys(data: bytes) -> tuple[tuple[float, float], int] | None:
    """pHYs (pixels per metre) as pixels per centimetre; None without a physical unit."""
    if len(data) != 9:
        return None
    x, y, unit = struct.unpack(">IIB", data)
    return ((x / 100, y / 100), 3) if unit == 1 and x and y else None


def _png_text(kind: bytes, data: bytes) -> tuple[str, str]:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk."""
    keyword, _, rest = data.partition(b"\x00")
    key = keyword.decode("latin-1")
    if kind == b"tEXt":
        return key, rest.decode("latin-1")
    if kind == b"zTXt":
        return key, _inflate(rest[1:]).decode("latin-1")
    compressed = rest[:1] == b"\x01"
    text = rest[2:].split(b"\x00", 2)[-1]
    return key, (_inflate(text) if compressed else text).decode("utf-8")


def _raw_profile(text: str) -> bytes | None:
    """EXIF from ImageMagick's 'Raw profile type exif' text ("\\nexif\\n  LENGTH\\nHEX...")."""
    parts = text.split()
    try:
        data = bytes.fromhex("".join(parts[2:]))
    except ValueError:
        return None
    return _split_prefix(data)[1] or None


def _collect_png(chunk: _Chunk, found: dict[str, Any]) -> None:
    """Record what ``chunk`` holds in ``found`` (first occurrence wins)."""
    if chunk.type == b"eXIf":
        found.setdefault("exif", _split_prefix(chunk.data)[1])
    elif chunk.type == b"iCCP":
        found.setdefault("icc", _png_iccp(chunk.data))
    elif chunk.type == b"pHYs" and _png_phys(chunk.data):
        found.setdefault("phys", _png_phys(chunk.data))
    elif chunk.type in (b"tEXt", b"zTXt", b"iTXt"):
        keyword, text = _png_text(chunk.type, chunk.data)
        if keyword == "Description":
            found.setdefault("description", text.strip() or None)
        elif keyword.lower() in ("raw profile type exif", "raw profile type app1"):
            found.setdefault("raw_exif", _raw_profile(text))


def _read_png(stream: BinaryIO) -> ImageMetadata:
    found: dict[str, Any] = {}
    for chunk in _png_chunks(stream):
        if chunk.data is not None:
            try:
                _collect_png(chunk, found)
            except (ValueError, zlib.error, struct.error):
                continue
    exif = _clean_exif(found.get("exif")) or _clean_exif(found.get("raw_exif"))
    resolution, unit = found.get("phys") or _exif_resolution(exif)
    return ImageMetadata(exif, found.get("icc"), found.get("description"), resolution, unit)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_iccp_chunk(profile: bytes | None) -> bytes:
    return _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(profile, 9)) if profile else b""


def _png_phys_chunk(meta: ImageMetadata) -> bytes:
    dpi = _dpi(meta)
    if dpi is None:
        return b""
    x, y = (min(max(round(value / 0.0254), 1), 0x7FFFFFFF) for value in dpi)
    return _png_chunk(b"pHYs", struct.pack(">IIB", x, y, 1))


def _png_description_chunk(text: str | None) -> bytes:
    """tEXt 'Description' (Latin-1 text) or iTXt (UTF-8) for other text."""
    if not text:
        return b""
    text = text.replace("\x00", "")
    try:
        return _png_chunk(b"tEXt", b"Description\x00" + text.encode("latin-1"))
    except UnicodeEncodeError:
        return _png_chunk(b"iTXt", b"Description\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def _png_replaced(chunk: _Chunk, new: dict[bytes, bytes]) -> bool:
    """Whether ``chunk`` is superseded by one of the ``new`` chunks."""
    if chunk.type in (b"iCCP", b"sRGB"):
        return bool(new[b"iCCP"])
    if chunk.type in (b"eXIf", b"pHYs"):
        return bool(new[chunk.type])
    if chunk.type in (b"tEXt", b"zTXt", b"iTXt") and new[b"tEXt"] and chunk.data is not None:
        return chunk.data.split(b"\x00", 1)[0] == b"Description"
    return False


def embed_in_png(data: bytes, meta: ImageMetadata) -> bytes:
    """Insert iCCP, eXIf, pHYs and a 'Description' text chunk right after IHDR (before any IDAT).

    Works for any bit depth (the image data are copied unchanged); chunks of the same kinds are
    replaced (an sRGB chunk too when an ICC profile is added). Returns ``data`` itself when
    ``meta`` is empty; raises ValueError when ``data`` is not a PNG stream.
    """
    if meta.is_empty():
        return data
    chunks = list(_png_chunks(io.BytesIO(data)))
    if not chunks or chunks[0].type != b"IHDR" or chunks[0].data is None or len(chunks[0].data) < 13:
        raise ValueError("not a PNG stream")
    width, height, _, colour = struct.unpack(">IIBB", chunks[0].data[:10])
    new = {b"iCCP": _png_iccp_chunk(_icc_for(meta.icc_profile, PNG_CHANNELS.get(colour, 3))),
           b"eXIf": b"",
           b"pHYs": _png_phys_chunk(meta),
           b"tEXt": _png_description_chunk(meta.description)}
    exif = _embeddable_exif(meta.exif, (width, height))
    new[b"eXIf"] = _png_chunk(b"eXIf", exif) if exif else b""
    replaced = [c for c in chunks if _png_replaced(c, new)]
    insert = chunks[0].end
    return b"".join([data[:insert], *new.values(), *_without(data, insert, replaced)])


# ---------------------------------------------------------------------------- physical pixel size

def length_unit(text: Any) -> str | None:
    """Canonical name of a length unit ('micron', 'um', 'µm', '\\u00B5m' -> 'µm'); None when not one."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if text in CENTIMETRES_PER_UNIT:
        return text
    return UNIT_ALIASES.get(text.lower(), text.lower() if text.lower() in CENTIMETRES_PER_UNIT else None)


def convert_length(value: float, unit: str, to: str) -> float:
    """``value`` in ``unit`` expressed in ``to`` (both keys of CENTIMETRES_PER_UNIT)."""
    return value * CENTIMETRES_PER_UNIT[unit] / CENTIMETRES_PER_UNIT[to]


@dataclass(frozen=True)
class PhysicalSize:
    """Calibration of a TIFF: pixel size along x and y in ``unit``, z step in ``z_unit``."""

    pixel: tuple[float, float] | None = None
    unit: str | None = None
    z: float | None = None
    z_unit: str | None = None


def _positive(value: Any) -> float | None:
    """``value`` as a finite float > 0, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _ratio(value: Any) -> float | None:
    """A TIFF RATIONAL (numerator, denominator) as a float > 0, else None."""
    if isinstance(value, tuple) and len(value) == 2 and value[1]:
        return _positive(value[0] / value[1])
    return None


def _imagej_size(tif: tifffile.TiffFile) -> PhysicalSize:
    """ImageJ: X/YResolution are pixels per 'unit' of the description; 'spacing' is the z step."""
    info = tif.imagej_metadata or {}
    unit = length_unit(info.get("unit"))
    tags = tif.pages[0].tags
    x, y = _ratio(tags.valueof(282)), _ratio(tags.valueof(283))
    pixel = (1 / x, 1 / (y or x)) if unit and x else None
    z_unit = length_unit(info.get("zunit")) or unit
    return PhysicalSize(pixel, unit if pixel else None, _positive(info.get("spacing")), z_unit)


def _ome_pixels(xml: str) -> dict[str, str]:
    """Attributes of the first Pixels element of an OME-XML document (the first series)."""
    for element in ElementTree.fromstring(xml).iter():
        if element.tag.rsplit("}", 1)[-1] == "Pixels":
            return dict(element.attrib)
    return {}


def _ome_length(attrib: dict[str, str], axis: str) -> tuple[float | None, str | None]:
    """PhysicalSize{axis} and its unit (µm when the unit attribute is absent)."""
    value = _positive(attrib.get(f"PhysicalSize{axis}"))
    unit = length_unit(attrib.get(f"PhysicalSize{axis}Unit", "µm"))
    return (value, unit) if value and unit else (None, None)


def _ome_size(tif: tifffile.TiffFile) -> PhysicalSize:
    """OME: PhysicalSizeX/Y/Z of the first image; Y is given in X's unit (X is used when Y is absent)."""
    attrib = _ome_pixels(tif.ome_metadata or "")
    (x, unit), (y, y_unit) = _ome_length(attrib, "X"), _ome_length(attrib, "Y")
    z, z_unit = _ome_length(attrib, "Z")
    pixel = (x, convert_length(y, y_unit, unit) if y else x) if x else None
    return PhysicalSize(pixel, unit if pixel else None, z, z_unit)


def _tags_size(tags: Any) -> PhysicalSize:
    """X/YResolution with ResolutionUnit inch (size in inches) or centimetre (size in µm)."""
    resolution, unit = _tiff_resolution(tags)
    if resolution is None:
        return PhysicalSize()
    name = "inch" if unit == 2 else "µm"
    per_unit = 1.0 if unit == 2 else 1e4
    return PhysicalSize((per_unit / resolution[0], per_unit / resolution[1]), name)


def tiff_physical_size(tif: tifffile.TiffFile) -> PhysicalSize:
    """Pixel size and z step of an open TIFF: ImageJ, then OME, then the resolution tags; best effort."""
    found = PhysicalSize()
    try:
        if tif.is_imagej:
            found = _imagej_size(tif)
        elif tif.is_ome:
            found = _ome_size(tif)
    except (ElementTree.ParseError, ValueError, TypeError, KeyError, ZeroDivisionError):
        found = PhysicalSize()
    if found.pixel is None:
        tags = _tags_size(tif.pages[0].tags)
        found = PhysicalSize(tags.pixel, tags.unit, found.z, found.z_unit)
    return found


def output_resolution(meta: ImageMetadata) -> tuple[tuple[float, float] | None, int | None]:
    """Resolution to write and its TIFF unit: from the pixel size when known (metric -> pixels per
    centimetre, unit 3; inch -> pixels per inch, unit 2), else ``meta.resolution`` as read."""
    if meta.pixel_size and meta.pixel_unit in CENTIMETRES_PER_UNIT and all(v > 0 for v in meta.pixel_size):
        if meta.pixel_unit == "inch":
            return (1 / meta.pixel_size[0], 1 / meta.pixel_size[1]), 2
        x, y = (convert_length(v, meta.pixel_unit, "cm") for v in meta.pixel_size)
        return (1 / x, 1 / y), 3
    if meta.resolution:
        return tuple(float(v) for v in meta.resolution), meta.resolution_unit or 2
    return None, None


def pixel_size_note(meta: ImageMetadata) -> str | None:
    """One ASCII line for descriptions, e.g. 'pixel size 0.5 x 0.5 um'; None without a pixel size."""
    if not meta.pixel_size or not meta.pixel_unit:
        return None
    x, y = meta.pixel_size
    return f"pixel size {x:.6g} x {y:.6g} {ASCII_UNITS.get(meta.pixel_unit, meta.pixel_unit)}"


def _described(meta: ImageMetadata) -> str | None:
    """The description with the pixel-size line appended (once)."""
    note = pixel_size_note(meta)
    text = meta.description
    if note is None or (text and note in text.splitlines()):
        return text
    return f"{text}\n{note}" if text else note


# ------------------------------------------------------------------------------------------ TIFF

def _tiff_resolution(tags: Any) -> tuple[tuple[float, float] | None, int | None]:
    values = [tags.valueof(code) for code in (282, 283)]
    if not all(isinstance(v, tuple) and len(v) == 2 and v[0] and v[1] for v in values):
        return None, None
    unit = tags.valueof(296)
    unit = 2 if unit is None else int(unit)  # tifffile's RESUNIT.NONE is falsy: no `or` here
    if unit not in (2, 3):  # no absolute unit (tifffile writes 1/1 NONE by default): not a resolution
        return None, None
    return (values[0][0] / values[0][1], values[1][0] / values[1][1]), unit


def _usable_description(value: Any) -> str | None:
    """ImageDescription unless it is machine-readable metadata (ImageJ, OME-XML, JSON)."""
    if isinstance(value, bytes):
        value = _decode_text(value)
    text = value.strip() if isinstance(value, str) else None
    return None if not text or text.startswith(TIFF_DESCRIPTION_SKIP) else text


def _exif_from_tiff_buffer(buf: Any) -> bytes | None:
    """An EXIF block from a classic TIFF's IFD0 text/resolution tags and its Exif/GPS IFDs."""
    layout = _layout(buf)
    endian = layout.endian
    ifd0 = _portable_entries(buf, layout.ifd0, endian, endian, only=TIFF_IFD0_CARRIED)
    children = _children(buf, layout, endian)
    if not children and not {tag for tag, *_ in ifd0} & {*BASELINE_TEXT_TAGS, DATETIME}:
        return None
    upright = (ORIENTATION, 3, 1, struct.pack(endian + "H", 1))
    return _pack_exif(endian, [*ifd0, upright], children)


def _exif_from_tiff(path: str | os.PathLike) -> bytes | None:
    try:
        with open(path, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _clean_exif(_exif_from_tiff_buffer(buf))
    except (OSError, ValueError, struct.error):
        return None


def _read_tiff(path: str | os.PathLike) -> ImageMetadata:
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        icc = _valid_icc(tags.valueof(34675))
        resolution, unit = _tiff_resolution(tags)
        description = _usable_description(tags.valueof(270))
        size = tiff_physical_size(tif)
    meta = ImageMetadata(_exif_from_tiff(path), icc, description, resolution, unit, size.pixel, size.unit)
    if resolution is None and meta.pixel_size:  # ImageJ / OME calibration: give it as a resolution too
        meta.resolution, meta.resolution_unit = output_resolution(meta)
    return meta


def _baseline_texts(exif: bytes | None) -> dict[int, bytes]:
    """Make, Model, Software, DateTime (else DateTimeOriginal), Artist, Copyright from EXIF."""
    buf = _split_prefix(exif or b"")[1]
    try:
        layout = _layout(buf)
    except (ValueError, struct.error):
        return {}
    texts = {tag: _ascii(buf, layout.ifd0.entries.get(tag))
             for tag in (*BASELINE_TEXT_TAGS, SOFTWARE, DATETIME)}
    if texts[DATETIME] is None and layout.exif is not None:
        texts[DATETIME] = _ascii(buf, layout.exif.entries.get(DATETIME_ORIGINAL))
    return {tag: text for tag, text in texts.items() if text}


def _tiff_text(text: str) -> str | bytes:
    """tifffile wants 7-bit ASCII str; other text goes in as UTF-8 bytes."""
    return text if text.isascii() else text.encode("utf-8")


def tiff_write_kwargs(meta: ImageMetadata, *, channels: int | None = None) -> dict[str, Any]:
    """Keyword arguments for ``tifffile.imwrite`` that carry ``meta``.

    ICC profile -> ``iccprofile`` (tag 34675, UNDEFINED; left out with a warning when ``channels``
    is given and the profile's colour space does not fit), resolution (:func:`output_resolution`:
    from the pixel size when known) -> ``resolution`` and ``resolutionunit``, description (with a
    "pixel size ..." line appended) -> ``description``, and from the EXIF block the baseline TIFF
    tags Make 271, Model 272, Artist 315, Copyright 33432 (``extratags``, ASCII), Software 305
    (``software``) and DateTime 306 (``datetime``; DateTimeOriginal when DateTime is absent).

    tifffile cannot write an EXIF sub-IFD (tags 34665/34853 are refused in ``extratags``), so the
    full Exif and GPS IFDs are added afterwards by :func:`embed_exif_in_tiff`.
    """
    kwargs: dict[str, Any] = {}
    icc = _icc_for(meta.icc_profile, channels)
    if icc:
        kwargs["iccprofile"] = icc
    resolution, unit = output_resolution(meta)
    if resolution:
        kwargs["resolution"] = resolution
        kwargs["resolutionunit"] = unit
    description = _described(meta)
    if description:
        kwargs["description"] = _tiff_text(description)
    texts = _baseline_texts(meta.exif)
    date = texts.pop(DATETIME, b"").decode("latin-1")
    if DATETIME_FORMAT.fullmatch(date):
        kwargs["datetime"] = date
    if SOFTWARE in texts:
        kwargs["software"] = texts.pop(SOFTWARE)
    extratags = [(tag, 2, 0, texts[tag], True) for tag in BASELINE_TEXT_TAGS if tag in texts]
    if extratags:
        kwargs["extratags"] = extratags
    return kwargs


def _read_raw_ifd(stream: BinaryIO, offset: int, endian: str) -> tuple[list[bytes], int]:
    """The 12-byte entries and next-IFD offset of the IFD at ``offset`` of a TIFF file."""
    stream.seek(offset)
    head = stream.read(2)
    count = struct.unpack(endian + "H", head)[0] if len(head) == 2 else 0
    table = stream.read(12 * count + 4)
    if not count or len(table) < 12 * count + 4:
        raise ValueError("unreadable first IFD")
    entries = [table[12 * i:12 * i + 12] for i in range(count)]
    return entries, struct.unpack(endian + "I", table[-4:])[0]


def _raw_size(entries: list[bytes], endian: str) -> tuple[int, int] | None:
    """(ImageWidth, ImageLength) from raw IFD entries."""
    values = {}
    for raw in entries:
        tag, kind, count = struct.unpack(endian + "HHI", raw[:8])
        if tag in (256, 257) and count == 1 and kind in (3, 4):
            fmt, end = ("H", 10) if kind == 3 else ("I", 12)
            values[tag] = struct.unpack(endian + fmt, raw[8:end])[0]
    return (values[256], values[257]) if len(values) == 2 else None


def _append_ifds(stream: BinaryIO, entries: list[bytes], next_offset: int,
                 children: dict[int, list[TagValue]], endian: str) -> None:
    """Append ``children`` and a copy of IFD0 that points to them; make the copy the first IFD."""
    end = stream.seek(0, io.SEEK_END)
    start = end + end % 2
    tail, pointers = _pack_children(children, start, endian)
    kept = [raw for raw in entries if struct.unpack(endian + "H", raw[:2])[0] not in children]
    table = sorted(kept + [struct.pack(endian + "HHI", *p[:3]) + p[3] for p in pointers],
                   key=lambda raw: struct.unpack(endian + "H", raw[:2])[0])
    ifd0 = struct.pack(endian + "H", len(table)) + b"".join(table) + struct.pack(endian + "I", next_offset)
    ifd0_offset = start + len(tail)
    if ifd0_offset + len(ifd0) > 0xFFFFFFFF:
        raise ValueError("file too large for classic TIFF offsets")
    stream.write(b"\x00" * (start - end) + tail + ifd0)
    stream.seek(4)
    stream.write(struct.pack(endian + "I", ifd0_offset))


def embed_exif_in_tiff(path: str | os.PathLike, meta: ImageMetadata) -> bool:
    """Add the Exif and GPS IFDs of ``meta.exif`` to the first page of a classic TIFF file, in place.

    Call it on the file ``tifffile.imwrite`` produced. The sub-IFDs and a copy of IFD0 with the
    ExifIFD (34665) / GPSInfo (34853) pointers are appended and the header is pointed at the copy;
    values are converted to the file's byte order and PixelX/YDimension set to the image size.
    The maker note and the Interop IFD are not carried (their internal offsets would dangle).
    Returns False, leaving the file untouched, when there is nothing to add or the file is not a
    classic TIFF (BigTIFF) or the EXIF block is unreadable (with a warning in the last cases).
    """
    if not meta.exif:
        return False
    try:
        with open(path, "r+b") as stream:
            endian, first = _tiff_header(stream.read(8))
            entries, next_offset = _read_raw_ifd(stream, first, endian)
            exif = prepare_exif(meta.exif, _raw_size(entries, endian))
            children = _children(exif, _layout(exif), endian)
            if children:
                _append_ifds(stream, entries, next_offset, children, endian)
            return bool(children)
    except (ValueError, struct.error) as exc:
        warnings.warn(f"{os.fspath(path)}: EXIF not embedded ({exc})", stacklevel=2)
        return False


# ------------------------------------------------------------------------------------------ WebP

def _read_webp(stream: BinaryIO) -> ImageMetadata:
    """EXIF and ICC from the RIFF chunks of a WebP file."""
    stream.seek(12)
    found: dict[bytes, bytes] = {}
    while len(head := stream.read(8)) == 8:
        kind, size = head[:4], struct.unpack("<I", head[4:])[0]
        if kind in (b"EXIF", b"ICCP") and kind not in found:
            found[kind] = stream.read(size)
            stream.seek(size % 2, io.SEEK_CUR)
        else:
            stream.seek(size + size % 2, io.SEEK_CUR)
    exif = _clean_exif(_split_prefix(found.get(b"EXIF", b""))[1])
    resolution, unit = _exif_resolution(exif)
    return ImageMetadata(exif, _valid_icc(found.get(b"ICCP")), None, resolution, unit)


# ------------------------------------------------------------------------------------------- read

def _sniff(head: bytes) -> str | None:
    """'jpeg', 'png', 'tiff' or 'webp' from a file's first 12 bytes."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def read_metadata(path: str | os.PathLike) -> ImageMetadata:
    """EXIF (cleaned by :func:`prepare_exif`), ICC profile, resolution and description of an image.

    Best effort: a file without metadata, with damaged metadata, of another type (BMP) or that
    cannot be read at all gives empty (or partial) metadata, never an exception. For a multi-page
    TIFF the first page's metadata is used.
    """
    try:
        with open(path, "rb") as stream:
            kind = _sniff(stream.read(12))
            stream.seek(0)
            if kind == "jpeg":
                return _read_jpeg(stream)
            if kind == "png":
                return _read_png(stream)
            if kind == "webp":
                return _read_webp(stream)
        return _read_tiff(path) if kind == "tiff" else ImageMetadata()
    except Exception:  # noqa: BLE001 - metadata is optional; a broken block must not stop a stack
        return ImageMetadata()
