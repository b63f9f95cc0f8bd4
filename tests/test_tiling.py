"""Tiled fusion equals untiled fusion: halo, whole-frame channel statistics, region readers, TIFF sink."""

import numpy as np
import pytest
import tifffile
import torch

from focusfuse import fuse_pair, fuse_stack
from focusfuse.align.estimate import FrameAlignment, warp_frame
from focusfuse.ops.color import to_gray, to_tensor
from focusfuse.methods.gacn.decision import decision_focus_measure, full_resolution_initial_map, refine_decision_map
from focusfuse.io.images import FrameRef, write_image
from focusfuse.methods.gacn.model import initial_decision_map
from focusfuse.io.sinks import TiffSink
from focusfuse.frames.sources import FileSource, WarpedSource, read_tiff_region
from focusfuse.backends.base import Backend
from focusfuse.box import Box
from focusfuse.engine.plan import auto_tile_size
from focusfuse.box import tile_grid
from focusfuse.methods.gacn.halo import HALO, NETWORK_RADIUS, halo_for
from focusfuse.methods.gacn.network import GacnNetwork
from focusfuse.methods.gacn.statistics import frame_channel_weights


def channel_weights(model, image, height, width, tile):
    """Whole-frame CSE weights of ``image`` streamed over tiles of ``tile`` (0: whole)."""
    net = GacnNetwork(model, Backend(torch.device("cpu")))
    with torch.inference_mode():
        return frame_channel_weights(net, lambda box: to_tensor(image[box.slices]), height, width, tile)

from conftest import textured


@pytest.mark.parametrize("h,w,tile", [(100, 130, 32), (64, 64, 64), (65, 40, 16), (50, 50, 0)])
def test_tile_grid_covers_the_image_once(h, w, tile):
    tiles = tile_grid(h, w, tile, HALO)
    covered = np.zeros((h, w), int)
    for t in tiles:
        covered[t.core.slices] += 1
        assert t.crop.y0 <= t.core.y0 and t.crop.y1 >= t.core.y1
        assert t.crop.y0 == max(0, t.core.y0 - HALO) and t.crop.x1 == min(w, t.core.x1 + HALO)
    assert np.all(covered == 1)


def _final_map(model, a, b, weights):
    with torch.no_grad():
        ga, gb = to_gray(to_tensor(a))[None], to_gray(to_tensor(b))[None]
        p0 = initial_decision_map(model.decision_logit(model.focus_measure(ga, weights[0]),
                                                       model.focus_measure(gb, weights[1])))
        return refine_decision_map(p0, ga, gb)[0, 0]


def test_network_radius_bounds_the_influence_of_a_pixel(model):
    """With fixed channel weights, changing pixels beyond the radius leaves the centre's final map unchanged."""
    size, c = 2 * NETWORK_RADIUS + 21, NETWORK_RADIUS + 10
    a, b = textured(size, size, 1), textured(size, size, 2)
    weights = [channel_weights(model, x, size, size, 0) for x in (a, b)]
    base = _final_map(model, a, b, weights)
    far = a.copy()
    far[:, c + NETWORK_RADIUS + 1:] = 1 - far[:, c + NETWORK_RADIUS + 1:]
    changed = _final_map(model, far, b, weights)
    assert not torch.equal(changed, base)  # the change does reach the map...
    assert torch.equal(changed[:, : c + 1], base[:, : c + 1])  # ...but not within the radius of it
    assert NETWORK_RADIUS <= HALO


@pytest.mark.parametrize("reduce", [2, 8])
def test_reduced_halo_bounds_the_influence_of_a_pixel(good_model, reduce):
    """As above with the decision path at 1/reduce resolution: nothing beyond halo_for(reduce) reaches a pixel."""
    halo = halo_for(reduce)
    assert halo % reduce == 0 and halo >= HALO
    size = 2 * halo + 4 * reduce
    c = halo + reduce  # the column whose map must not change
    a, b = textured(size, size, 1), textured(size, size, 2)
    weights = [channel_weights(good_model, x, size, size, 0) for x in (a, b)]

    def final_map(a):
        with torch.no_grad():
            ga, gb = to_gray(to_tensor(a))[None], to_gray(to_tensor(b))[None]
            sf_a, sf_b = (decision_focus_measure(good_model, g, reduce, w) for g, w in ((ga, weights[0]), (gb, weights[1])))
            p0 = full_resolution_initial_map(good_model, sf_a, sf_b, reduce, (size, size))
            return refine_decision_map(p0, ga, gb)[0, 0]

    base = final_map(a)
    far = a.copy()
    far[:, c + halo:] = 1 - far[:, c + halo:]
    changed = final_map(far)
    assert not torch.equal(changed, base)
    assert torch.equal(changed[:, : c + 1], base[:, : c + 1])


def test_tiles_of_a_reduced_run_start_on_block_boundaries():
    for reduce in (2, 3, 5):
        tile = -(-50 // reduce) * reduce  # as fuse_frames rounds it
        for t in tile_grid(301, 257, tile, halo=halo_for(reduce)):
            assert t.crop.y0 % reduce == 0 and t.crop.x0 % reduce == 0
            assert t.crop.y1 % reduce == 0 or t.crop.y1 == 301


def test_streamed_channel_weights_equal_the_whole_frame_ones(model):
    image = textured(90, 70, 3)
    with torch.no_grad():
        tiled = channel_weights(model, image, 90, 70, 32)
        gray = to_gray(to_tensor(image))[None]
        outputs, x, whole = [], gray, []
        for block, cse in zip(model.features.blocks, model.features.cse):
            y = block(x)
            whole.append(cse.channel_weights(y.mean(dim=(2, 3))))
            outputs.append(y * whole[-1][:, :, None, None])
            x = torch.cat(outputs, 1)
    for t, w in zip(tiled, whole):
        assert torch.allclose(t, w, atol=1e-6)


def _stack(n=4, h=150, w=170):
    return [np.round(textured(h, w, seed, 3) * 255).astype(np.uint8) for seed in range(n)]


def _several_frames_chosen(index_map: np.ndarray) -> bool:
    """The comparison means something only when the decisions vary (a random model picks one frame)."""
    return np.bincount(index_map.ravel()).max() < 0.9 * index_map.size


@pytest.mark.parametrize("strategy", ["calibrated", "calibration"])
def test_tiled_stack_equals_untiled(good_model, strategy):
    frames = _stack()
    whole = fuse_stack(frames, weights=good_model, device="cpu", align="none", strategy=strategy, tile_size=0)
    tiled = fuse_stack(frames, weights=good_model, device="cpu", align="none", strategy=strategy, tile_size=48)
    assert _several_frames_chosen(whole.index_map)
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert np.array_equal(whole.index_map, tiled.index_map)


def test_tiled_pair_equals_untiled_including_decision_maps(good_model):
    a, b = _stack(2, 130, 200)
    whole = fuse_pair(a, b, weights=good_model, device="cpu", tile_size=0)
    tiled = fuse_pair(a, b, weights=good_model, device="cpu", tile_size=64)
    assert 0.1 < whole.decision_map.mean() < 0.9
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    # float round-off, amplified by the steep sigmoid(1000 x) near ties: within one 8-bit level
    assert np.abs(whole.decision_map - tiled.decision_map).max() < 1 / 255
    assert np.mean(np.abs(whole.initial_map - tiled.initial_map) > 1 / 255) < 1e-3  # ties only


@pytest.mark.parametrize("reduce,tile", [(2, 48), (3, 40)])  # 40 becomes 42: tiles start on block boundaries
def test_reduced_tiled_stack_equals_reduced_untiled(good_model, reduce, tile):
    frames = _stack(3, 151, 167)  # sizes that are not multiples of reduce: partial blocks at the edges
    whole = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=0, reduce=reduce)
    tiled = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=tile, reduce=reduce)
    assert _several_frames_chosen(whole.index_map)
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert np.mean(whole.index_map != tiled.index_map) < 1e-3  # float round-off at ties only
    full = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=0)
    assert not np.array_equal(full.index_map, whole.index_map)  # reduce does change the computation


def test_tiled_files_png_and_tiff_regions(good_model, tmp_path):
    frames = _stack(3, 140, 150)
    paths = []
    for i, f in enumerate(frames):
        if i == 1:
            path = tmp_path / f"f{i}.tif"
            tifffile.imwrite(path, f, tile=(32, 32), photometric="rgb", compression="zlib")
        else:
            path = write_image(tmp_path / f"f{i}.png", f)
        paths.append(path)
    whole = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=0)
    tiled = fuse_stack(paths, weights=good_model, device="cpu", align="none", tile_size=64)
    assert _several_frames_chosen(whole.index_map)
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert np.array_equal(whole.index_map, tiled.index_map)


@pytest.mark.parametrize("layout", ["tiled", "striped"])
def test_tiff_region_reader_decodes_only_what_it_needs(tmp_path, layout):
    image = (np.random.default_rng(0).random((300, 333, 3)) * 65535).astype(np.uint16)
    path = tmp_path / "x.tif"
    options = {"tile": (64, 64)} if layout == "tiled" else {"rowsperstrip": 7}
    tifffile.imwrite(path, image, photometric="rgb", compression="zlib", **options)
    box = Box(45, 211, 70, 333)
    assert np.array_equal(read_tiff_region(FrameRef(path), box), image[box.slices])
    source = FileSource(FrameRef(path), "x")
    assert source.regions_from_tiff and np.array_equal(source.read(box), image[box.slices])


def test_warped_regions_equal_the_warped_frame(tmp_path):
    image = np.round(textured(120, 160, 5, 3) * 255).astype(np.uint8)
    path = write_image(tmp_path / "f.png", image)
    transform = np.array([[1.02, 0.01, -3.3], [-0.008, 0.99, 2.7], [0, 0, 1]])
    alignment = FrameAlignment(transform, gain=1.05, offset=-0.01)
    whole = warp_frame(image, alignment, (120, 160))
    source = WarpedSource(FileSource(FrameRef(path), "f", tmp_path), alignment, (120, 160))
    for box in (Box(0, 40, 0, 50), Box(30, 120, 100, 160), Box(50, 70, 60, 90)):
        assert np.array_equal(source.read(box), whole[box.slices])
    source.close()
    assert not list(tmp_path.glob("*.raw"))


@pytest.mark.parametrize("transform", [
    [[0.8, 0.0, 10.0], [0.0, 0.8, 5.0], [0, 0, 1]],  # a smaller frame: regions map past its edges
    [[1.001, 0.002, 0.3], [-0.001, 0.999, -0.2], [1e-6, -2e-6, 1]],  # mild perspective
])
def test_every_region_warps_like_the_whole_frame(transform, tmp_path):
    image = np.round(textured(90, 110, 7, 3) * 255).astype(np.uint8)
    alignment = FrameAlignment(np.array(transform, np.float64), gain=0.97, offset=0.01)
    whole = warp_frame(image, alignment, (90, 110))
    source = WarpedSource(FileSource(FrameRef(write_image(tmp_path / "f.png", image)), "f", tmp_path), alignment,
                          (90, 110))
    for y0 in range(0, 90, 13):
        for x0 in range(0, 110, 17):
            box = Box(y0, min(90, y0 + 11), x0, min(110, x0 + 3))
            assert np.array_equal(source.read(box), whole[box.slices]), box
    source.close()


def test_aligned_tiled_stack_equals_aligned_untiled(good_model):
    import cv2

    base = _stack(1, 160, 180)[0]
    frames = []
    for k in range(3):  # frame k is sharp in the k-th third of the columns
        sharp = np.zeros((160, 180, 1), np.float32)
        sharp[:, 60 * k:60 * (k + 1)] = 1
        sharp = cv2.GaussianBlur(sharp, (0, 0), 8)[:, :, None]
        frame = sharp * base + (1 - sharp) * cv2.GaussianBlur(base, (0, 0), 1.5)
        m = np.float32([[1 + 0.01 * (k - 1), 0, 2.0 * (k - 1)], [0, 1 + 0.01 * (k - 1), -1.5 * (k - 1)]])
        frames.append(cv2.warpAffine(np.round(frame).astype(np.uint8), m, (180, 160), borderMode=cv2.BORDER_REFLECT))
    whole = fuse_stack(frames, weights=good_model, device="cpu", align="auto", tile_size=0)
    tiled = fuse_stack(frames, weights=good_model, device="cpu", align="auto", tile_size=64)
    assert _several_frames_chosen(whole.index_map)
    assert not whole.skipped
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert np.mean(whole.fused != tiled.fused) < 1e-4  # float round-off in the network only
    assert np.array_equal(whole.index_map, tiled.index_map)


def test_tiff_sink_streams_bands(good_model, tmp_path):
    frames = [np.round(textured(300, 280, s, 3) * 65535).astype(np.uint16) for s in range(3)]
    expected = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=96)
    assert _several_frames_chosen(expected.index_map)

    class TiffOutput:
        def held_bytes(self, h, w, c, dtype, tiled):
            return 0

        def open(self, h, w, c, dtype, tiled):
            return TiffSink(h, w, c, dtype, tmp_path / "out.tif", index_path=tmp_path / "index.tif",
                            compression="zlib")

    fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=96, output=TiffOutput())
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), expected.fused)
    assert np.array_equal(tifffile.imread(tmp_path / "index.tif"), expected.index_map)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages[0].is_tiled


def test_auto_tile_size_follows_the_budget():
    assert auto_tile_size(100, 100, 2400, 10**12, HALO) == 0
    small = auto_tile_size(20000, 20000, 2400, 2 * 10**9, HALO)
    assert 256 <= small < 20000 and small % 64 == 0
    assert auto_tile_size(20000, 20000, 2400, 4 * 10**9, HALO) > small
    reduced = auto_tile_size(20000, 20000, 2400, 2 * 10**9, halo_for(2))
    assert reduced < small and reduced % 64 == 0  # the same budget, a wider halo
    assert auto_tile_size(20000, 20000, 2400, 10**7, HALO) is None  # no useful tile fits


def test_cli_streams_tiled_tiff_outputs_equal_to_untiled(weights_file, tmp_path):
    from click.testing import CliRunner

    from focusfuse.cli import main
    from focusfuse.io.images import read_image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"z{i}.tif", np.round(textured(210, 190, i, 3) * 65535).astype(np.uint16),
                         photometric="rgb", tile=(64, 64), resolution=(2000.0, 2000.0), resolutionunit="CENTIMETER")
    common = ["--align", "none", "--weights", str(weights_file), "--device", "cpu", "-q"]
    whole = CliRunner().invoke(main, ["stack", str(folder), "-o", str(tmp_path / "whole.tif"), "--index-map",
                                      str(tmp_path / "whole_index.tif"), "--tile-size", "0", *common])
    tiled = CliRunner().invoke(main, ["stack", str(folder), "-o", str(tmp_path / "tiled.tif"), "--index-map",
                                      str(tmp_path / "tiled_index.tif"), "--tile-size", "64", "--compression", "zlib",
                                      *common])
    assert whole.exit_code == 0 and tiled.exit_code == 0, tiled.output
    a, b = read_image(tmp_path / "whole.tif"), read_image(tmp_path / "tiled.tif")
    assert a.dtype == b.dtype == np.uint16 and np.abs(a.astype(int) - b).max() <= 257  # 1 LSB at 8 bits
    assert np.array_equal(read_image(tmp_path / "whole_index.tif"), read_image(tmp_path / "tiled_index.tif"))
    with tifffile.TiffFile(tmp_path / "tiled.tif") as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.compression == 8  # deflate
        assert page.get_resolution() == pytest.approx((2000.0, 2000.0))
        assert "focusfuse" in page.description
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_pair_streams_a_tiled_decision_map(weights_file, tmp_path):
    from click.testing import CliRunner

    from focusfuse.cli import main
    from focusfuse.io.images import read_image

    a, b = (np.round(textured(150, 170, s, 3) * 255).astype(np.uint8) for s in (1, 2))
    pa, pb = write_image(tmp_path / "a.png", a), write_image(tmp_path / "b.png", b)
    common = ["--weights", str(weights_file), "--device", "cpu", "-q"]
    for name, tile in (("whole", "0"), ("tiled", "64")):
        r = CliRunner().invoke(main, ["pair", str(pa), str(pb), "-o", str(tmp_path / f"{name}.tif"),
                                      "--decision-map", str(tmp_path / f"{name}_dm.tif"), "--tile-size", tile, *common])
        assert r.exit_code == 0, r.output
    assert np.abs(read_image(tmp_path / "whole.tif").astype(int) - read_image(tmp_path / "tiled.tif")).max() <= 1
    dm_whole, dm_tiled = read_image(tmp_path / "whole_dm.tif"), read_image(tmp_path / "tiled_dm.tif")
    assert dm_tiled.dtype == np.uint16 and np.abs(dm_whole.astype(int) - dm_tiled).max() <= 65535 // 255


@pytest.mark.parametrize("options", [{}, {"rowsperstrip": 10}, {"byteorder": ">"}])
def test_uncompressed_strips_are_read_row_by_row(tmp_path, options, monkeypatch):
    import focusfuse.frames.sources as sources

    image = (np.random.default_rng(1).random((120, 90, 3)) * 65535).astype(np.uint16)
    path = tmp_path / "u.tif"
    tifffile.imwrite(path, image, photometric="rgb", **options)
    decoded = []
    monkeypatch.setattr(tifffile.TiffPage, "decode", property(lambda self: decoded.append(1)))
    box = Box(17, 101, 5, 77)
    assert np.array_equal(sources.read_tiff_region(FrameRef(path), box), image[box.slices])
    assert not decoded  # no strip was decoded whole
