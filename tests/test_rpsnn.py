"""R-PSNN: the network's layout, the cascade, maps refused, tiles of a pair, weights, training and the CLI."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from focusfuse import fuse_pair, fuse_stack
from focusfuse.cli import main
from focusfuse.engine.options import FusionOptions
from focusfuse.errors import UsageError
from focusfuse.io.images import write_image
from focusfuse.jobs.stack_job import StackJob, run_stack
from focusfuse.methods.rpsnn import RECEPTIVE_RADIUS
from focusfuse.methods.rpsnn.network import RPSNN
from focusfuse.methods.rpsnn.weights import load_rpsnn, save_rpsnn_weights

from conftest import textured


@pytest.fixture(scope="module")
def rpsnn_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rpsnn") / "random.pt"
    save_rpsnn_weights(RPSNN().eval(), path)
    return path


def frames(n=2, h=48, w=56, channels=3):
    return [np.round(textured(h, w, s, channels if channels > 1 else 0) * 255).astype(np.uint8) for s in range(n)]


def test_network_has_the_published_layout():
    net = RPSNN()
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 2_322_289 and len(state) == 76  # weights only, no biases
    assert state["Siamese_1.0.conv.0.weight"].shape == (16, 3, 7, 7)
    assert state["Siamese_2.3.conv2_3.0.weight"].shape == (64, 64, 3, 3)
    assert state["Siamese_1.5.conv3.weight"].shape == (64, 192, 1, 1)
    assert state["Gen_Module.7.conv.0.weight"].shape == (3, 3, 3, 3)
    assert net.Siamese_1[0].conv[0].weight.data_ptr() != net.Siamese_2[0].conv[0].weight.data_ptr()  # not shared
    a, b = torch.rand(1, 3, 20, 24), torch.rand(1, 3, 20, 24)
    assert net(a, b).shape == (1, 3, 20, 24)


def test_receptive_radius():
    torch.manual_seed(1)
    net = RPSNN().eval()
    a, b = torch.rand(1, 3, 85, 85), torch.rand(1, 3, 85, 85)
    changed = a.clone()
    changed[0, :, 42, 42] += 0.5
    with torch.no_grad():
        diff = (net(a, b) - net(changed, b)).abs().sum(dim=(0, 1)).numpy()
    ys, xs = np.nonzero(diff)
    assert max(np.abs(ys - 42).max(), np.abs(xs - 42).max()) == RECEPTIVE_RADIUS


def test_cascade_keeps_channels_and_has_no_maps(rpsnn_weights):
    colour = fuse_stack(frames(3), method="rpsnn", weights=rpsnn_weights, device="cpu", align="none")
    assert colour.fused.shape == (48, 56, 3) and colour.index_map is None
    gray = fuse_stack(frames(2, channels=1), method="rpsnn", weights=rpsnn_weights, device="cpu", align="none")
    assert gray.fused.shape == (48, 56)
    pair = fuse_pair(*frames(2), method="rpsnn", weights=rpsnn_weights, device="cpu")
    assert pair.decision_map is None and pair.initial_map is None
    assert np.array_equal(pair.fused, fuse_stack(frames(2), method="rpsnn", weights=rpsnn_weights, device="cpu",
                                                 align="none").fused)  # a two-frame stack is the pair


@pytest.mark.slow
def test_a_tiled_pair_equals_the_untiled_one(rpsnn_weights):
    a, b = frames(2, 200, 180)
    whole = fuse_pair(a, b, method="rpsnn", weights=rpsnn_weights, device="cpu", tile_size=0)
    tiled = fuse_pair(a, b, method="rpsnn", weights=rpsnn_weights, device="cpu", tile_size=96)
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1


@pytest.mark.slow
def test_a_tiled_stack_equals_the_untiled_one(rpsnn_weights):

    stack = [f.astype(np.uint16) * 257 for f in frames(3, 600, 40)]  # tall and narrow: tiles of 64 whose crops
    # (halo 87) are real parts of the image; 16 bits, so that a halo too small shows
    whole = fuse_stack(stack, method="rpsnn", weights=rpsnn_weights, device="cpu", align="none", tile_size=0)
    tiled = fuse_stack(stack, method="rpsnn", weights=rpsnn_weights, device="cpu", align="none", tile_size=64)
    assert tiled.tiles == 10 and whole.tiles == 1
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1


def test_the_cascade_needs_a_halo_growing_with_the_frames():
    from focusfuse.backends.base import Backend
    from focusfuse.methods.rpsnn.method import RpsnnMethod

    torch.manual_seed(0)
    net = RPSNN().eval()
    stack = [torch.from_numpy(textured(300, 40, s, 3)).permute(2, 0, 1)[None].float() for s in range(3)]

    def cascade(frames, rows):
        with torch.inference_mode():
            out = frames[0][..., :rows, :]
            for frame in frames[1:]:
                out = net(out, frame[..., :rows, :])
        return out

    whole = cascade(stack, 300)
    halo = RpsnnMethod(None, Backend(torch.device("cpu"))).halo
    core = 100
    assert torch.equal(cascade(stack, core + halo(3))[..., :core, :], whole[..., :core, :])
    assert not torch.equal(cascade(stack, core + halo(2))[..., :core, :], whole[..., :core, :])  # a pair's is short


def test_maps_and_strategies_are_refused(rpsnn_weights, tmp_path):
    with pytest.raises(UsageError, match="strategy applies"):
        FusionOptions(method="rpsnn", strategy="serial")
    job = StackJob(inputs=frames(2), output=tmp_path / "f.png", options=FusionOptions(method="rpsnn", align="none"),
                   index_map=tmp_path / "i.png")
    with pytest.raises(UsageError, match="no index map") as err:
        run_stack(job, load_rpsnn(rpsnn_weights))
    assert err.value.option == "index_map" and not (tmp_path / "f.png").exists()
    for k, f in enumerate(frames(2)):
        write_image(tmp_path / f"{k}.png", f)
    r = CliRunner().invoke(main, ["pair", str(tmp_path / "0.png"), str(tmp_path / "1.png"), "-o",
                                  str(tmp_path / "p.png"), "--method", "rpsnn", "--weights", str(rpsnn_weights),
                                  "--decision-map", str(tmp_path / "d.png")])
    assert r.exit_code == 2 and "--decision-map" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["pair", str(tmp_path / "0.png"), str(tmp_path / "1.png"), "-o",
                                  str(tmp_path / "p.png"), "--method", "rpsnn", "--weights", str(rpsnn_weights), "-q"])
    assert r.exit_code == 0, r.output


def test_training_writes_loadable_weights(tmp_path):
    from focusfuse.train.rpsnn import train_rpsnn

    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(11):
        write_image(folder / f"img{k:02d}.png", np.round(textured(40, 44, k, 3) * 255).astype(np.uint8))
    summary = train_rpsnn(folder, tmp_path / "run", epochs=1, batch_size=2, size=32, max_steps=1)
    assert summary["best_epoch"] == 1 and isinstance(load_rpsnn(summary["weights"]), RPSNN)
