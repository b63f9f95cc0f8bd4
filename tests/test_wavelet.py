"""The wavelet (Laplacian pyramid) method: pyramid ops, the fusion rule, tiles, edge fill, 16-bit, options, CLI."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from focusfuse import fuse_pair, fuse_stack
from focusfuse.cli import main
from focusfuse.engine.options import FusionOptions
from focusfuse.errors import UsageError
from focusfuse.io.images import read_image, write_image
from focusfuse.methods.base import FrameInput
from focusfuse.methods.wavelet import LEVELS
from focusfuse.methods.wavelet.method import WaveletMethod, pyramid_reach
from focusfuse.methods.wavelet.pyramid import decompose, reconstruct
from focusfuse.methods.wavelet.state import PyramidStack
from focusfuse.backends.base import Backend
from focusfuse.evaluation.synthetic import disk_blur

from conftest import textured


def split_focus(h: int = 96, w: int = 128, channels: int = 3, seed: int = 0):
    """(truth, A sharp on the left half, B sharp on the right half), float32 in [0, 1]."""
    truth = textured(h, w, seed) if channels == 1 else np.stack([textured(h, w, seed + c) for c in range(channels)], 2)
    blurred = disk_blur(truth, 3.0)
    left = np.zeros((h, w), bool)
    left[:, : w // 2] = True
    mask = left if channels == 1 else left[:, :, None]
    return truth, np.where(mask, truth, blurred), np.where(mask, blurred, truth)


def to8(x):
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (64, 64), (33, 70)])
def test_pyramid_reconstructs_exactly(shape):
    x = torch.rand(2, 3, *shape)
    details, base = decompose(x, LEVELS)
    assert len(details) == LEVELS and details[0].shape == x.shape
    assert torch.allclose(reconstruct(details, base), x, atol=1e-6)


@pytest.mark.parametrize("levels", [2, 3, LEVELS])
def test_a_pixel_reaches_no_further_than_the_halo(levels):
    """Changing one pixel of one frame changes the fused image only within the method's reach."""
    torch.manual_seed(levels)
    size = 2 * pyramid_reach(levels) + 40
    frames = [torch.rand(1, size, size) for _ in range(3)]
    radius, c = 0, size // 2
    for k in range(3):
        changed = [f.clone() for f in frames]
        changed[k][0, c, c] += 0.5

        def fused(fs):
            state = PyramidStack(levels)
            state.add_batch([FrameInput(i, f) for i, f in enumerate(fs)])
            return state.fused[0]

        ys, xs = np.nonzero(((fused(frames) - fused(changed)).abs() > 0).numpy())
        radius = max(radius, np.abs(ys - c).max(), np.abs(xs - c).max())
    assert 0 < radius <= pyramid_reach(levels) < WaveletMethod(Backend(torch.device("cpu")), levels=levels).halo()


def test_the_sharp_half_of_each_frame_wins():
    truth, a, b = split_focus()
    result = fuse_stack([to8(a), to8(b)], method="wavelet", align="none", device="cpu")
    index = result.index_map
    assert np.mean(index[:, 8:56] == 0) > 0.95 and np.mean(index[:, 72:120] == 1) > 0.95
    error = np.abs(result.fused.astype(float) - to8(truth)).mean()
    assert error < 0.5 * min(np.abs(to8(f).astype(float) - to8(truth)).mean() for f in (a, b))


def test_tiled_equals_untiled_16_bit():
    halo = WaveletMethod(Backend(torch.device("cpu"))).halo()
    _, a, b = split_focus(2 * halo + 200, 2 * halo + 150)  # tiles whose crops are smaller than the image
    frames = [np.round(f * 65535).astype(np.uint16) for f in (a, b, (a + b) / 2)]
    whole = fuse_stack(frames, method="wavelet", align="none", device="cpu", tile_size=0)
    tiled = fuse_stack(frames, method="wavelet", align="none", device="cpu", tile_size=128)
    assert tiled.tiles > 4 and whole.fused.dtype == np.uint16
    assert np.array_equal(whole.fused, tiled.fused)  # every value computed alike whatever the tile's size
    assert np.array_equal(whole.index_map, tiled.index_map)


def test_tiles_equal_the_whole_image_at_exact_ties():
    """Two frames whose energies tie everywhere (B = 1 - A): no tile may break a tie differently."""
    a = to8(np.stack([textured(300, 310, c) for c in range(3)], 2))
    whole = fuse_stack([a, 255 - a], method="wavelet", align="none", device="cpu", tile_size=0)
    tiled = fuse_stack([a, 255 - a], method="wavelet", align="none", device="cpu", tile_size=96)
    assert tiled.tiles > 1 and np.array_equal(whole.fused, tiled.fused)
    assert np.array_equal(whole.index_map, tiled.index_map)


def test_gray_frames_and_pairs_keep_their_maps():
    _, a, b = split_focus(channels=1)
    result = fuse_pair(to8(a), to8(b), method="wavelet", device="cpu")
    assert result.fused.ndim == 2 and result.fused.dtype == np.uint8
    assert set(np.unique(result.decision_map)) <= {0.0, 1.0}
    assert result.decision_map[:, 8:56].mean() > 0.95 and result.decision_map[:, 72:120].mean() < 0.05


@pytest.mark.parametrize("band", [1, 2, 8])
@pytest.mark.parametrize("fill_first", [False, True])
def test_edge_fill_never_leaks_into_the_result(band, fill_first):
    """A frame's black band: never chosen where the other frame has pixels, and no darkening in or beside it."""
    _, a, _ = split_focus()
    b = disk_blur(a, 2.0)
    b[:, :band] = 0.0  # a registered frame's black band, over the part where A is sharp
    frames = [to8(b), to8(a)] if fill_first else [to8(a), to8(b)]
    result = fuse_stack(frames, method="wavelet", align="none", device="cpu")
    a_index = 1 if fill_first else 0
    assert np.all(result.index_map[:, :band] == a_index)
    inside = result.fused[:, :band].astype(float) - to8(a)[:, :band]
    beside = result.fused[:, band:band + 16].astype(float) - to8(a)[:, band:band + 16]
    assert abs(inside.mean()) < 1.0 and np.abs(beside).mean() < 1.0


def test_memory_does_not_grow_with_the_frames():
    def state_bytes(n):
        state = PyramidStack()
        state.add_batch([FrameInput(i, torch.rand(3, 64, 64)) for i in range(n)])
        tensors = state.details + state.energy + [state.base_sum, state.index]
        return sum(t.numel() * t.element_size() for t in tensors)

    assert state_bytes(2) == state_bytes(9)


def test_options_refuse_what_the_method_does_not_have():
    with pytest.raises(UsageError, match="reduce applies to the gacn method") as err:
        FusionOptions(method="wavelet", reduce=2)
    assert err.value.option == "reduce"
    with pytest.raises(UsageError, match="strategy applies to the gacn and sesf methods") as err:
        FusionOptions(method="wavelet", strategy="serial")
    assert err.value.option == "strategy"
    assert FusionOptions().strategy == "calibrated" and FusionOptions(method="wavelet").strategy is None
    frames = [to8(f) for f in split_focus(40, 40)[1:]]
    with pytest.raises(UsageError, match="the wavelet method has none") as err:
        fuse_stack(frames, method="wavelet", weights="some.pt", align="none", device="cpu")
    assert err.value.option == "weights"
    with pytest.raises(UsageError, match="unknown method") as err:
        FusionOptions(method="dtcwt")
    assert err.value.option == "method"


def test_cli_stack_pair_and_batch(tmp_path):
    _, a, b = split_focus()
    folder = tmp_path / "root" / "s1"
    folder.mkdir(parents=True)
    write_image(folder / "a.png", to8(a))
    write_image(folder / "b.png", to8(b))
    runner = CliRunner()
    r = runner.invoke(main, ["stack", str(folder), "-o", str(tmp_path / "f.png"), "--method", "wavelet",
                             "--align", "none", "--index-map", str(tmp_path / "i.png"), "--json"])
    assert r.exit_code == 0, r.output
    done = json.loads(r.output.strip().splitlines()[-1])
    assert done["method"] == "wavelet" and done["weights"] is None
    assert read_image(tmp_path / "f.png").shape == a.shape
    r = runner.invoke(main, ["pair", str(folder / "a.png"), str(folder / "b.png"), "-o", str(tmp_path / "p.png"),
                             "--method", "wavelet", "--decision-map", str(tmp_path / "d.png"), "-q"])
    assert r.exit_code == 0, r.output
    assert read_image(tmp_path / "d.png").shape == a.shape[:2]
    r = runner.invoke(main, ["batch", str(tmp_path / "root"), "-o", str(tmp_path / "out"), "--method", "wavelet",
                             "--align", "none", "-q"])
    assert r.exit_code == 0, r.output
    sidecar = json.loads((tmp_path / "out" / "s1.json").read_text())
    assert sidecar["params"]["method"] == "wavelet"
    for flags, text in ((["--reduce", "2"], "--reduce"), (["--strategy", "serial"], "--strategy"),
                        (["--weights", "x.pt"], "--weights")):
        r = runner.invoke(main, ["stack", str(folder), "-o", str(tmp_path / "g.png"), "--method", "wavelet", *flags])
        assert r.exit_code == 2 and text in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_planner_sizes_tiles_by_the_method():
    """The wavelet method needs a tenth of GACN's memory per pixel: a budget that tiles GACN need not tile it."""
    from conftest import random_model
    from focusfuse.engine.plan import plan_fusion, resident_memory
    from focusfuse.methods.registry import make_method

    backend = Backend(torch.device("cpu"))
    limit = resident_memory() + backend.runtime_reserve + (400 << 20)  # 400 MiB for the fusion
    shape, dtype = (600, 800), np.dtype(np.uint8)
    wavelet = plan_fusion(shape, 3, dtype, make_method("wavelet", backend), backend,
                          FusionOptions(memory_limit=limit, method="wavelet"))
    gacn = plan_fusion(shape, 3, dtype, make_method("gacn", backend, weights=random_model()), backend,
                       FusionOptions(memory_limit=limit))
    assert len(wavelet.tiles) == 1 and len(gacn.tiles) > 1
    assert WaveletMethod(backend).bytes_per_pixel() * 9 <= backend.bytes_per_pixel
