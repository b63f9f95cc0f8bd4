"""Z-stacks from ImageJ hyperstacks and OME-TIFF; pixel size and z spacing carried into outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from focusfuse.jobs.depth import z_spacing
from focusfuse.frames.refs import read_frame
from focusfuse.io.images import FrameRef, expand_inputs, plan_tiff_frames, read_image, tiff_page_count, write_image
from focusfuse.io.metadata import ImageMetadata, read_metadata, tiff_write_kwargs
from focusfuse.frames.sources import FileSource, _tiff_info, read_tiff_region, tiff_region_readable
from focusfuse.box import Box

H, W = 20, 24
PROVENANCE = "focusfuse 0.1.0 (GACN focus stacking): 4 frames"


def _planes(shape: tuple[int, ...], dtype: type = np.uint16, seed: int = 0) -> np.ndarray:
    """Random pixels of ``shape``; every plane differs, so a wrong plane index shows."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


def _frames(path: Path) -> list[FrameRef]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # layouts without left-out axes must not warn
        return expand_inputs([path])


def _assert_probe_matches(ref: FrameRef) -> None:
    """The header-only probe agrees with what a full read gives."""
    image = read_frame(ref)
    info = _tiff_info(ref)
    assert info.shape == image.shape[:2]
    assert info.channels == (1 if image.ndim == 2 else 3)
    assert info.dtype == image.dtype


def _ome(path: Path, data: np.ndarray, axes: str, **extra) -> Path:
    metadata = {"axes": axes, "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.5,
                "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": 2.0, "PhysicalSizeZUnit": "µm"}
    tifffile.imwrite(path, data, ome=True, metadata=metadata, **extra)
    return path


# ------------------------------------------------------------------------------------- frame plans

def _all_planes(axes: str, shape: tuple[int, ...], rgb_pages: bool = False) -> list[tuple[int, ...]]:
    plan = plan_tiff_frames(axes, shape, rgb_pages=rgb_pages)
    return [plan.planes(k) for k in range(len(plan))]


def test_plan_follows_z_and_stacks_three_channels() -> None:
    # ImageJ order T, Z, C: plane index = (t * Z + z) * C + c
    assert _all_planes("TZC", (2, 4, 3)) == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11)]
    assert plan_tiff_frames("TZC", (2, 4, 3)).notes == ("using T=0 of T=2 (the stack runs along Z)",)
    # OME order C, Z (XYZCT): plane index = c * Z + z
    assert _all_planes("CZ", (3, 4)) == [(0, 4, 8), (1, 5, 9), (2, 6, 10), (3, 7, 11)]
    assert _all_planes("ZT", (3, 2)) == [(0,), (2,), (4,)]
    with pytest.raises(IndexError):
        plan_tiff_frames("ZT", (3, 2)).planes(3)


def test_plan_of_plain_pages_and_other_channel_counts() -> None:
    assert _all_planes("I", (5,)) == [(i,) for i in range(5)]
    assert _all_planes("QQ", (2, 3)) == [(i,) for i in range(6)]
    assert _all_planes("", ()) == [(0,)]
    assert _all_planes("ZC", (2, 4)) == [(0,), (4,)]
    assert "channel 0 of C=4" in plan_tiff_frames("ZC", (2, 4)).notes[0]
    assert _all_planes("ZC", (2, 3), rgb_pages=True) == [(0,), (3,)]
    assert "channel 0 of C=3" in plan_tiff_frames("ZC", (2, 3), rgb_pages=True).notes[0]
    assert _all_planes("CT", (3, 5)) == [(t, 5 + t, 10 + t) for t in range(5)]  # no Z: along T


# ------------------------------------------------------------------------------------------ ImageJ

def test_imagej_hyperstack_zcyx_gives_rgb_frames(tmp_path: Path) -> None:
    data = _planes((4, 3, H, W))
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"})
    refs = _frames(path)
    assert tiff_page_count(path) == 4 and [r.page for r in refs] == [0, 1, 2, 3]
    assert refs[3].name == "hyper.tif[3]"
    for z, ref in enumerate(refs):
        assert np.array_equal(ref.read(), np.moveaxis(data[z], 0, -1))
        _assert_probe_matches(ref)


@pytest.mark.parametrize("unit", ["micron", "um", "\\u00B5m"])
def test_imagej_gray_stack_calibration(tmp_path: Path, unit: str) -> None:
    data = _planes((5, H, W), np.uint8)
    path = tmp_path / "gray.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "unit": unit, "spacing": 1.5})
    refs = _frames(path)
    assert len(refs) == 5 and np.array_equal(refs[2].read(), data[2])
    _assert_probe_matches(refs[4])
    meta = read_metadata(path)
    assert meta.pixel_size == pytest.approx((0.5, 0.5)) and meta.pixel_unit == "µm"
    assert z_spacing(path) == (pytest.approx(1.5), "µm")


def test_imagej_time_series_of_stacks_uses_the_first_time_point(tmp_path: Path) -> None:
    data = _planes((2, 3, 2, H, W), np.uint8)  # T, Z, C=2
    path = tmp_path / "tzc.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    with pytest.warns(UserWarning) as caught:
        refs = expand_inputs([path])
    messages = " | ".join(str(w.message) for w in caught)
    assert "T=0 of T=2" in messages and "channel 0 of C=2" in messages
    assert len(refs) == 3
    for z, ref in enumerate(refs):
        assert np.array_equal(ref.read(), data[0, z, 0])


def test_truncated_imagej_file_is_read_from_contiguous_data(tmp_path: Path) -> None:
    # ImageJ writes one IFD only for files over 4 GB; the other planes follow the first one.
    data = _planes((3, 3, H, W))
    path = tmp_path / "truncated.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"}, truncate=True)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1
    refs = _frames(path)
    assert len(refs) == 3
    box = Box(3, 17, 5, 21)
    for z, ref in enumerate(refs):
        expected = np.moveaxis(data[z], 0, -1)
        assert np.array_equal(ref.read(), expected)
        _assert_probe_matches(ref)
        assert not tiff_region_readable(ref)  # no per-plane IFD: the source decodes the frame once
        source = FileSource(ref, ref.name, tmp_path)
        assert np.array_equal(source.read(box), expected[box.slices])
        source.close()


def test_planar_rgb_pages_are_one_frame_each(tmp_path: Path) -> None:
    data = _planes((2, 3, H, W), np.uint8)  # pages of planar (separate) RGB samples
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate")
    refs = _frames(path)
    box = Box(2, 11, 4, 23)
    assert len(refs) == 2
    for z, ref in enumerate(refs):
        expected = np.moveaxis(data[z], 0, -1)
        assert np.array_equal(ref.read(), expected)
        _assert_probe_matches(ref)
        assert not tiff_region_readable(ref)
        source = FileSource(ref, ref.name, tmp_path)
        assert np.array_equal(source.read(box), expected[box.slices])
        source.close()



@pytest.mark.parametrize("samples", [1, 3])
def test_pages_written_one_by_one_are_one_stack(tmp_path: Path, samples: int) -> None:
    """tifffile makes each page written on its own a series of its own: the frames are all of them."""
    data = _planes((3, H, W, samples) if samples > 1 else (3, H, W), np.uint16)
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in data:
            tif.write(page, photometric="rgb" if samples > 1 else "minisblack", tile=(16, 16))
    refs = _frames(path)
    box = Box(2, 11, 4, 23)
    assert tiff_page_count(path) == 3 and len(refs) == 3
    for z, ref in enumerate(refs):
        assert np.array_equal(ref.read(), data[z])
        _assert_probe_matches(ref)
        assert tiff_region_readable(ref)
        assert np.array_equal(read_tiff_region(ref, box), data[z][box.slices])


def test_pages_of_different_sizes_keep_the_first_series(tmp_path: Path) -> None:
    """A page with a thumbnail (another size) is one image, not a stack."""
    path = tmp_path / "thumb.tif"
    full = _planes((H, W), np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(full)
        tif.write(full[::2, ::2])
    assert tiff_page_count(path) == 1 and np.array_equal(read_image(path), full)

# --------------------------------------------------------------------------------------------- OME

def test_ome_czyx_frames_stack_the_channel_planes(tmp_path: Path) -> None:
    data = _planes((3, 4, H, W))
    path = _ome(tmp_path / "czyx.ome.tif", data, "CZYX")
    refs = _frames(path)
    assert len(refs) == 4
    for z, ref in enumerate(refs):
        assert np.array_equal(ref.read(), np.moveaxis(data[:, z], 0, -1))
        _assert_probe_matches(ref)
    meta = read_metadata(path)
    assert meta.pixel_size == pytest.approx((0.5, 0.5)) and meta.pixel_unit == "µm"
    assert z_spacing(path) == (pytest.approx(2.0), "µm")


def test_ome_gray_zyx_with_units_other_than_microns(tmp_path: Path) -> None:
    data = _planes((3, H, W), np.uint8)
    path = tmp_path / "zyx.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 250.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.3,
        "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": 0.001, "PhysicalSizeZUnit": "mm"})
    refs = _frames(path)
    assert len(refs) == 3 and np.array_equal(refs[1].read(), data[1])
    meta = read_metadata(path)
    assert meta.pixel_size == pytest.approx((250.0, 300.0)) and meta.pixel_unit == "nm"
    assert z_spacing(path) == (pytest.approx(0.001), "mm")


def test_ome_rgb_pages(tmp_path: Path) -> None:
    data = _planes((3, H, W, 3), np.uint8)
    path = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(path, data, ome=True, photometric="rgb", metadata={"axes": "ZYXS"})
    refs = _frames(path)
    assert len(refs) == 3 and np.array_equal(refs[2].read(), data[2])
    _assert_probe_matches(refs[0])


def test_ome_tzyx_uses_t0_with_a_warning(tmp_path: Path) -> None:
    data = _planes((2, 3, H, W), np.uint8)
    path = _ome(tmp_path / "tzyx.ome.tif", data, "TZYX")
    with pytest.warns(UserWarning, match="T=0 of T=2"):
        refs = expand_inputs([path])
    assert len(refs) == 3
    for z, ref in enumerate(refs):
        assert np.array_equal(ref.read(), data[0, z])


def test_ome_four_channels_use_channel_zero(tmp_path: Path) -> None:
    data = _planes((2, 4, H, W), np.uint8)
    path = _ome(tmp_path / "zcyx.ome.tif", data, "ZCYX")
    with pytest.warns(UserWarning, match="channel 0 of C=4"):
        refs = expand_inputs([path])
    assert len(refs) == 2 and np.array_equal(refs[1].read(), data[1, 0])
    _assert_probe_matches(refs[1])


@pytest.mark.parametrize(("axes", "shape"), [("ZCYX", (3, 3, 70, 90)), ("CZYX", (3, 2, 70, 90)),
                                             ("ZYX", (2, 70, 90))])
def test_tiled_ome_regions_equal_slices_of_whole_frames(tmp_path: Path, axes: str, shape: tuple) -> None:
    data = _planes(shape)
    path = _ome(tmp_path / "tiled.ome.tif", data, axes, tile=(32, 32), compression="zlib")
    refs = _frames(path)
    box = Box(5, 67, 30, 90)  # crosses tile rows and columns, ends at the padded edge tiles
    for ref in refs:
        whole = ref.read()
        assert tiff_region_readable(ref)
        assert np.array_equal(read_tiff_region(ref, box), whole[box.slices])
        source = FileSource(ref, ref.name)
        assert source.regions_from_tiff and np.array_equal(source.read(box), whole[box.slices])
        _assert_probe_matches(ref)


# ------------------------------------------------------------------------------ pixel size carried

def _output_calibration(path: Path) -> tuple[tuple[float, float], int, str]:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return page.get_resolution(), int(page.resolutionunit), page.description


@pytest.mark.parametrize("kind", ["imagej", "ome"])
def test_fused_tiff_carries_the_input_pixel_size(tmp_path: Path, kind: str) -> None:
    data = _planes((3, H, W), np.uint8)
    source = tmp_path / f"{kind}.tif"
    if kind == "imagej":
        tifffile.imwrite(source, data, imagej=True, resolution=(2.0, 2.0),
                         metadata={"axes": "ZYX", "unit": "micron", "spacing": 2.0})
    else:
        _ome(source, data, "ZYX")
    meta = read_metadata(source)
    meta.description = PROVENANCE  # what the pipeline sets
    out = write_image(tmp_path / "fused.tif", data[1], metadata=meta)
    resolution, unit, description = _output_calibration(out)
    assert resolution == pytest.approx((20000.0, 20000.0))  # pixels per cm for 0.5 µm
    assert unit == tifffile.RESUNIT.CENTIMETER
    assert description.splitlines() == [PROVENANCE, "pixel size 0.5 x 0.5 um"]
    back = read_metadata(out)
    assert back.pixel_size == pytest.approx(meta.pixel_size) and back.pixel_unit == "µm"


def test_odd_pixel_sizes_survive_the_rational_tags(tmp_path: Path) -> None:
    meta = ImageMetadata(pixel_size=(0.345, 0.2), pixel_unit="µm")
    out = write_image(tmp_path / "odd.tif", _planes((H, W), np.uint8), metadata=meta)
    back = read_metadata(out)
    assert back.pixel_size == pytest.approx((0.345, 0.2), rel=1e-9) and back.pixel_unit == "µm"
    assert _output_calibration(out)[2] == "pixel size 0.345 x 0.2 um"


def test_nanometres_and_inches_become_resolution_tags(tmp_path: Path) -> None:
    nm = tiff_write_kwargs(ImageMetadata(pixel_size=(250.0, 250.0), pixel_unit="nm"))
    assert nm["resolution"] == pytest.approx((40000.0, 40000.0)) and nm["resolutionunit"] == 3
    inch = tiff_write_kwargs(ImageMetadata(pixel_size=(1 / 300, 1 / 300), pixel_unit="inch"))
    assert inch["resolution"] == pytest.approx((300.0, 300.0)) and inch["resolutionunit"] == 2
    again = tiff_write_kwargs(ImageMetadata(description="made\npixel size 250 x 250 nm",
                                            pixel_size=(250.0, 250.0), pixel_unit="nm"))
    assert again["description"] == "made\npixel size 250 x 250 nm"  # not appended twice


def test_png_output_gets_the_pixel_size_as_phys(tmp_path: Path) -> None:
    meta = ImageMetadata(pixel_size=(0.5, 0.5), pixel_unit="µm")
    out = write_image(tmp_path / "fused.png", _planes((H, W), np.uint8), metadata=meta)
    back = read_metadata(out)  # pHYs: 2,000,000 pixels per metre
    assert back.resolution == pytest.approx((20000.0, 20000.0)) and back.resolution_unit == 3


def test_plain_tiff_resolution_in_centimetres_reads_as_microns(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    data = _planes((2, H, W), np.uint8)
    tifffile.imwrite(path, data, resolution=(4000.0, 5000.0), resolutionunit="CENTIMETER")
    meta = read_metadata(path)
    assert meta.pixel_size == pytest.approx((2.5, 2.0)) and meta.pixel_unit == "µm"
    assert meta.resolution == pytest.approx((4000.0, 5000.0)) and meta.resolution_unit == 3
    assert z_spacing(path) is None
    assert tiff_page_count(path) == 2 and np.array_equal(read_image(path, 1), data[1])
