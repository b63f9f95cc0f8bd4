"""Metadata carried from a reference frame into JPEG, PNG and TIFF outputs (focusfuse.io.metadata)."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, PngImagePlugin, TiffImagePlugin, features

from focusfuse.io.metadata import (
    ImageMetadata,
    embed_exif_in_tiff,
    embed_in_jpeg,
    embed_in_png,
    normalize_orientation,
    prepare_exif,
    read_metadata,
    tiff_write_kwargs,
)

DESCRIPTION = "Focus stack of 12 frames \u2014 5 \u00b5m steps"
EXIF_IFD = 0x8769
UPRIGHT_HW = (24, 16)  # the 24x16 (W x H) camera frame below has Orientation 6


def _synthetic_icc(size: int, space: bytes = b"RGB ") -> bytes:
    """An ICC-like blob: a 128-byte header with size, colour space and 'acsp', then a pattern."""
    blob = bytearray((np.arange(size) % 251).astype(np.uint8).tobytes())
    blob[0:4] = size.to_bytes(4, "big")
    blob[16:20] = space
    blob[36:40] = b"acsp"
    return bytes(blob)


@functools.cache  # the profile header holds its creation time: make it once, so every call is equal
def _icc() -> bytes:
    try:
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    except ImportError:
        return _synthetic_icc(600)


def _camera_exif(endian: str = "<") -> bytes:
    """EXIF as a camera writes it (with the 'Exif\\0\\0' prefix), in byte order ``endian``."""
    exif = Image.Exif()
    exif.endian = endian
    exif[271], exif[272], exif[274] = "FocusCam", "FC-1", 6
    exif[282] = exif[283] = TiffImagePlugin.IFDRational(300, 1)
    exif[296] = 2
    sub = exif.get_ifd(EXIF_IFD)
    sub[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal
    sub[0x829A] = TiffImagePlugin.IFDRational(1, 125)  # ExposureTime
    sub[0x829D] = TiffImagePlugin.IFDRational(28, 10)  # FNumber
    sub[0x8827] = 400  # ISO
    sub[0xA002], sub[0xA003] = 24, 16  # PixelX/YDimension of the stored (sideways) frame
    return exif.tobytes()


def _camera_jpeg(path: Path, endian: str = "<", icc: bytes | None = None) -> Path:
    pixels = np.random.default_rng(1).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, exif=_camera_exif(endian), icc_profile=icc or _icc())
    return path


def _pixels(dtype: type, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(2)
    shape = UPRIGHT_HW + ((channels,) if channels > 1 else ())
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


def _encode(suffix: str, image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(suffix, image)
    assert ok
    return buffer.tobytes()


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _jpeg_markers(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of the JPEG segments before SOS (test-side parser)."""
    found, pos = [], 2
    while data[pos + 1] != 0xDA:
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        found.append((data[pos + 1], data[pos + 4:pos + 2 + length]))
        pos += 2 + length
    return found


def _png_types(data: bytes) -> list[bytes]:
    types, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        types.append(kind)
        pos += 12 + length
    return types


def _assert_camera_exif(exif: Image.Exif, width: int, height: int) -> None:
    sub = exif.get_ifd(EXIF_IFD)
    assert (exif[271], exif[272], exif.get(274)) == ("FocusCam", "FC-1", 1)
    assert sub[0x9003] == "2024:05:06 07:08:09"
    assert float(sub[0x829A]) == pytest.approx(1 / 125) and float(sub[0x829D]) == pytest.approx(2.8)
    assert sub[0x8827] == 400
    assert (sub[0xA002], sub[0xA003]) == (width, height)


def _thumbnail_exif(endian: str) -> bytes:
    """Hand-made block: IFD0 (Make, Orientation 8, Exif IFD), Exif IFD (40x30), IFD1 + thumbnail."""
    p = lambda fmt, *v: struct.pack(endian + fmt, *v)  # noqa: E731
    ifd0 = (p("H", 3) + p("HHI", 271, 2, 8) + p("I", 50) + p("HHI", 274, 3, 1) + p("HH", 8, 0)
            + p("HHI", 34665, 4, 1) + p("I", 58) + p("I", 88))
    exif = (p("H", 2) + p("HHI", 40962, 3, 1) + p("HH", 40, 0) + p("HHI", 40963, 3, 1) + p("HH", 30, 0)
            + p("I", 0))
    ifd1 = p("H", 2) + p("HHI", 513, 4, 1) + p("I", 118) + p("HHI", 514, 4, 1) + p("I", 104) + p("I", 0)
    head = (b"II*\x00" if endian == "<" else b"MM\x00*") + p("I", 8)
    blob = head + ifd0 + b"Maker12\x00" + exif + ifd1 + b"\xff\xd8" + b"t" * 100 + b"\xff\xd9"
    assert len(blob) == 222
    return blob


# ------------------------------------------------------------------------------------------ read

@pytest.mark.parametrize("endian", ["<", ">"])
def test_read_metadata_from_camera_jpeg(tmp_path: Path, endian: str) -> None:
    meta = read_metadata(_camera_jpeg(tmp_path / "cam.jpg", endian))
    assert meta.exif[:4] == (b"II*\x00" if endian == "<" else b"MM\x00*")
    assert meta.icc_profile == _icc()
    assert meta.resolution == (300.0, 300.0) and meta.resolution_unit == 2
    exif = Image.Exif()
    exif.load(meta.exif)
    _assert_camera_exif(exif, width=16, height=24)  # Orientation 6 transposed the frame


def test_read_metadata_from_png(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "slide 3", zip=True)
    path = tmp_path / "in.png"
    Image.fromarray(_pixels(np.uint8)).save(path, pnginfo=info, exif=_camera_exif(), icc_profile=_icc(),
                                            dpi=(254, 254))
    meta = read_metadata(path)
    assert meta.icc_profile == _icc() and meta.description == "slide 3"
    assert meta.resolution == pytest.approx((100.0, 100.0)) and meta.resolution_unit == 3
    exif = Image.Exif()
    exif.load(meta.exif)
    assert exif[271] == "FocusCam" and exif[274] == 1


def test_read_metadata_from_raw_profile_text(tmp_path: Path) -> None:
    blob = _camera_exif()
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(blob):8d}\n{blob.hex()}\n", zip=True)
    path = tmp_path / "magick.png"
    Image.fromarray(_pixels(np.uint8)).save(path, pnginfo=info)
    exif = Image.Exif()
    exif.load(read_metadata(path).exif)
    assert exif[272] == "FC-1" and exif[274] == 1


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_read_metadata_from_webp(tmp_path: Path) -> None:
    path = tmp_path / "in.webp"
    Image.fromarray(_pixels(np.uint8)).save(path, exif=_camera_exif(">"), icc_profile=_icc())
    meta = read_metadata(path)
    assert meta.icc_profile == _icc() and meta.exif[:4] == b"MM\x00*"


def test_files_without_metadata(tmp_path: Path) -> None:
    image = _pixels(np.uint8)
    for suffix in (".png", ".jpg", ".bmp"):
        (tmp_path / f"plain{suffix}").write_bytes(_encode(suffix, image))
    tifffile.imwrite(tmp_path / "plain.tif", image, photometric="rgb", metadata=None)
    for path in sorted(tmp_path.iterdir()):
        meta = read_metadata(path)
        assert meta.is_empty() and meta == ImageMetadata(), path.name
    for suffix, embed in ((".jpg", embed_in_jpeg), (".png", embed_in_png)):
        data = _encode(suffix, image)
        assert embed(data, ImageMetadata()) == data
    assert tiff_write_kwargs(ImageMetadata()) == {}
    assert embed_exif_in_tiff(tmp_path / "plain.tif", ImageMetadata()) is False


def test_corrupt_metadata_never_raises(tmp_path: Path) -> None:
    icc = _icc()
    good = _encode(".jpg", _pixels(np.uint8))
    icc_segment = b"\xff\xe2" + struct.pack(">H", len(icc) + 16) + b"ICC_PROFILE\x00\x01\x01" + icc
    for junk in (b"II*\x00\xff\xff\xff\x7f", b"MM\x00*\x00\x00\x00\x08\xff\xff", b"garbage!"):
        app1 = b"\xff\xe1" + struct.pack(">H", len(junk) + 8) + b"Exif\x00\x00" + junk
        path = tmp_path / "bad.jpg"
        path.write_bytes(good[:2] + app1 + icc_segment + good[2:])
        meta = read_metadata(path)
        assert meta.exif is None and meta.icc_profile == icc
    png = _encode(".png", _pixels(np.uint8))
    bad_crc = struct.pack(">I", 4) + b"iCCP" + b"abcd" + b"\x00\x00\x00\x00"
    exif_junk = (struct.pack(">I", 6) + b"eXIf" + b"II*\x00\x09\x09"
                 + struct.pack(">I", zlib.crc32(b"eXIfII*\x00\x09\x09")))
    cases = {"bad.png": png[:33] + bad_crc + exif_junk + png[33:],
             "cut.jpg": _camera_jpeg(tmp_path / "c.jpg").read_bytes()[:40],
             "noise.tif": b"II*\x00" + bytes(range(256)) * 3, "empty.png": b"", "text.jpg": b"hello"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert read_metadata(tmp_path / name).exif is None, name
    assert read_metadata(tmp_path / "missing.jpg").is_empty()


# ----------------------------------------------------------------------------------- EXIF patching

@pytest.mark.parametrize("endian", ["<", ">"])
def test_normalize_orientation_changes_only_the_value(endian: str) -> None:
    blob = _thumbnail_exif(endian)
    fixed = normalize_orientation(blob)
    assert len(fixed) == len(blob)
    assert {i for i in range(len(blob)) if blob[i] != fixed[i]} <= set(range(30, 34))
    assert struct.unpack(endian + "H", fixed[30:32])[0] == 1
    assert normalize_orientation(b"Exif\x00\x00" + blob)[:6] == b"Exif\x00\x00"
    assert normalize_orientation(fixed) == fixed
    with pytest.raises(ValueError):
        normalize_orientation(b"not exif at all")


@pytest.mark.parametrize("endian", ["<", ">"])
def test_thumbnail_dropped_and_dimensions_follow_the_output(endian: str) -> None:
    blob = _thumbnail_exif(endian)
    cleaned = prepare_exif(blob)
    assert len(cleaned) == 88  # IFD1 and its thumbnail were at the end: cut off
    assert struct.unpack(endian + "I", cleaned[46:50])[0] == 0  # IFD0 next pointer
    exif = Image.Exif()
    exif.load(cleaned)
    assert (exif[271], exif[274]) == ("Maker12", 1)
    assert (exif.get_ifd(EXIF_IFD)[40962], exif.get_ifd(EXIF_IFD)[40963]) == (30, 40)  # Orientation 8
    exif.load(prepare_exif(blob, (70000, 5)))  # a width beyond SHORT becomes a LONG
    assert (exif.get_ifd(EXIF_IFD)[40962], exif.get_ifd(EXIF_IFD)[40963]) == (70000, 5)


# ------------------------------------------------------------------------------------------ embed

@pytest.mark.parametrize("endian", ["<", ">"])
def test_jpeg_output_carries_metadata(tmp_path: Path, endian: str) -> None:
    meta = read_metadata(_camera_jpeg(tmp_path / "cam.jpg", endian))
    meta.description = DESCRIPTION
    plain = _encode(".jpg", _pixels(np.uint8))
    data = embed_in_jpeg(plain, meta)
    np.testing.assert_array_equal(_decode(data), _decode(plain))
    markers = [m for m, _ in _jpeg_markers(data)]
    assert markers[:4] == [0xE0, 0xE1, 0xE2, 0xFE] and markers.count(0xE1) == 1
    assert struct.unpack(">BHH", _jpeg_markers(data)[0][1][7:12]) == (1, 300, 300)  # JFIF density in dpi
    with Image.open(io.BytesIO(data)) as im:
        assert im.info["icc_profile"] == meta.icc_profile
        assert im.info["dpi"] == (300, 300)
        assert im.info["comment"].decode("utf-8") == DESCRIPTION
        _assert_camera_exif(im.getexif(), *UPRIGHT_HW[::-1])
    again = embed_in_jpeg(data, meta)  # existing segments are replaced, not duplicated
    assert [m for m, _ in _jpeg_markers(again)] == markers


def test_jpeg_large_icc_is_split_into_segments(tmp_path: Path) -> None:
    icc = _synthetic_icc(150_000)
    data = embed_in_jpeg(_encode(".jpg", _pixels(np.uint8)), ImageMetadata(None, icc))
    chunks = [p for m, p in _jpeg_markers(data) if m == 0xE2]
    assert [(p[12], p[13]) for p in chunks] == [(1, 3), (2, 3), (3, 3)]
    assert max(len(p) for p in chunks) == 65519 + 14
    (tmp_path / "big.jpg").write_bytes(data)
    assert read_metadata(tmp_path / "big.jpg").icc_profile == icc
    with Image.open(tmp_path / "big.jpg") as im:
        assert im.info["icc_profile"] == icc


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_output_carries_metadata(tmp_path: Path, dtype: type) -> None:
    meta = read_metadata(_camera_jpeg(tmp_path / "cam.jpg", ">"))
    meta.description = DESCRIPTION
    image = _pixels(dtype)
    plain = _encode(".png", image)
    data = embed_in_png(plain, meta)
    decoded = _decode(data)
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, image)
    assert _png_types(data)[:5] == [b"IHDR", b"iCCP", b"eXIf", b"pHYs", b"iTXt"]
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.info["icc_profile"] == meta.icc_profile
        assert im.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert im.info["Description"] == DESCRIPTION
        _assert_camera_exif(im.getexif(), *UPRIGHT_HW[::-1])
    assert embed_in_png(data, meta) == data  # re-embedding replaces the same chunks


def test_gray_output_does_not_get_an_rgb_profile(tmp_path: Path) -> None:
    meta = read_metadata(_camera_jpeg(tmp_path / "cam.jpg"))
    with pytest.warns(UserWarning, match="ICC profile"):
        data = embed_in_png(_encode(".png", _pixels(np.uint16, channels=1)), meta)
    assert b"iCCP" not in _png_types(data) and b"eXIf" in _png_types(data)
    with pytest.warns(UserWarning, match="ICC profile"):
        assert "iccprofile" not in tiff_write_kwargs(meta, channels=1)


def test_unusable_exif_is_skipped_with_a_warning() -> None:
    plain = _encode(".png", _pixels(np.uint8))
    with pytest.warns(UserWarning, match="EXIF not embedded"):
        data = embed_in_png(plain, ImageMetadata(exif=b"junk", icc_profile=_icc()))
    assert b"eXIf" not in _png_types(data) and b"iCCP" in _png_types(data)
    np.testing.assert_array_equal(_decode(data), _decode(plain))


@pytest.mark.parametrize(("exif_endian", "byteorder"), [("<", ">"), (">", "<")])
def test_tiff_output_carries_metadata(tmp_path: Path, exif_endian: str, byteorder: str) -> None:
    meta = read_metadata(_camera_jpeg(tmp_path / "cam.jpg", exif_endian))
    meta.description = DESCRIPTION
    image = _pixels(np.uint16)
    path = tmp_path / "out.tif"
    tifffile.imwrite(path, image, photometric="rgb", metadata=None, byteorder=byteorder,
                     **tiff_write_kwargs(meta, channels=3))
    assert embed_exif_in_tiff(path, meta) is True
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        np.testing.assert_array_equal(page.asarray(), image)
        tags = page.tags
        assert tags.valueof(34675) == meta.icc_profile
        assert (tags.valueof(271), tags.valueof(272)) == ("FocusCam", "FC-1")
        assert tags.valueof(306) == "2024:05:06 07:08:09"
        assert tags.valueof(282) == (300, 1) and int(tags.valueof(296)) == 2
        assert tags.valueof(270).encode("utf-8", "surrogateescape") == DESCRIPTION.encode("utf-8")
        exif = tags.valueof(34665)
    assert exif["DateTimeOriginal"] == "2024:05:06 07:08:09" and exif["ExposureTime"] == (1, 125)
    assert (exif["PixelXDimension"], exif["PixelYDimension"]) == UPRIGHT_HW[::-1]
    back = read_metadata(path)  # the TIFF's own EXIF is found again
    parsed = Image.Exif()
    parsed.load(back.exif)
    _assert_camera_exif(parsed, *UPRIGHT_HW[::-1])
    assert back.icc_profile == meta.icc_profile and back.resolution == (300.0, 300.0)
