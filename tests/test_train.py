import json

import numpy as np
import pytest
import torch

from focusfuse.evaluation.metrics import qg_global
from focusfuse.train.data import (FocusPairs, PairRecipe, edge_bands, make_pair, paint_structures, random_shapes_mask,
                                  recipe_overrides, split_images, thin_structures_mask)
from focusfuse.train.loss import (boundary_band, boundary_dice_loss, dice_loss, gacn_loss, qg_differentiable,
                                  symmetric_dice_loss)
from focusfuse.methods.gacn.weights import load_model
from focusfuse.io.images import write_image


def _real_image(name: str = "camera") -> np.ndarray:
    """A real photograph bundled with scikit-image (gray float in [0, 1])."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 3:
        image = image @ np.array([0.2125, 0.7154, 0.0721])
    return (image / 255.0).astype(np.float32)


@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_differentiable_qg_with_large_k_equals_the_metric(name):
    import cv2

    sharp = _real_image(name)[:256, :256]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    mask = np.zeros_like(sharp)
    mask[:, :128] = 1
    a = mask * sharp + (1 - mask) * blurred
    b = (1 - mask) * sharp + mask * blurred
    fused = 0.7 * a + 0.3 * b
    as_t = lambda x: torch.from_numpy(x.astype(np.float32))[None, None]  # noqa: E731
    ours = float(qg_differentiable(as_t(a), as_t(b), as_t(fused), k=1e4))
    reference = qg_global(a * 255.0, b * 255.0, fused * 255.0)
    assert abs(ours - reference) < 1e-3


def test_loss_gradients_are_finite_and_dice_behaves():
    torch.manual_seed(0)
    a = torch.rand(2, 1, 32, 32)
    b = torch.rand(2, 1, 32, 32)
    b[:, :, :8] = 0.5  # flat area: zero gradients must not produce NaN
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    logits = torch.randn(2, 1, 32, 32, requires_grad=True)
    p = torch.sigmoid(logits)
    terms = gacn_loss(p, p, a, b, mask, k=1.0)
    terms["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert float(dice_loss(mask, mask).max()) < 1e-6
    assert float(dice_loss(1 - mask, mask).min()) > 0.9


def test_symmetric_dice_makes_the_loss_independent_of_the_frame_order():
    torch.manual_seed(1)
    a, b = torch.rand(2, 1, 24, 24), torch.rand(2, 1, 24, 24)
    mask = torch.zeros(2, 1, 24, 24)
    mask[:, :, :6] = 1  # frame A sharp on a quarter: Dice on A's map alone weighs its errors more
    p0 = torch.sigmoid(torch.randn(2, 1, 24, 24))
    p = torch.sigmoid(torch.randn(2, 1, 24, 24))
    given = gacn_loss(p0, p, a, b, mask, symmetric_dice=True)
    swapped = gacn_loss(1 - p0, 1 - p, b, a, 1 - mask, symmetric_dice=True)
    assert torch.allclose(given["loss"], swapped["loss"], atol=1e-6)
    assert torch.allclose(symmetric_dice_loss(p0, mask), 0.5 * (dice_loss(p0, mask) + dice_loss(1 - p0, 1 - mask)))
    paper_given = gacn_loss(p0, p, a, b, mask)["loss"]
    paper_swapped = gacn_loss(1 - p0, 1 - p, b, a, 1 - mask)["loss"]
    assert abs(float(paper_given - paper_swapped)) > 1e-3


def test_boundary_dice_scores_where_a_boundary_lies_not_the_whole_map():
    mask = torch.zeros(1, 1, 64, 64)
    mask[:, :, 20:40, 20:40] = 1
    band = boundary_band(mask, 4)
    assert float(band[0, 0, 30, 30]) == 0 and float(band[0, 0, 30, 20]) == 1 and float(band[0, 0, 30, 16]) == 1
    assert float(band[0, 0, 30, 15]) == 0 and float(band[0, 0, 30, 23]) == 1 and float(band[0, 0, 30, 24]) == 0
    wider = torch.zeros_like(mask)
    wider[:, :, 17:43, 17:43] = 1  # the near square drawn 3 px too wide on every side
    assert float(boundary_dice_loss(mask, mask, 4)) < 1e-6
    whole, near = float(symmetric_dice_loss(wider, mask)), float(boundary_dice_loss(wider, mask, 4))
    assert near > 3 * whole  # the same error weighs more where it lies
    swapped = boundary_dice_loss(1 - wider, 1 - mask, 4)  # symmetric in the frames
    assert abs(float(swapped) - near) < 1e-6
    assert float(boundary_dice_loss(torch.zeros_like(mask), torch.zeros_like(mask), 4)) < 1e-6  # no boundary
    a, b = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)
    logits = torch.randn(1, 1, 64, 64, requires_grad=True)
    p = torch.sigmoid(logits)
    plain = gacn_loss(p, p, a, b, mask)
    terms = gacn_loss(p, p, a, b, mask, boundary_weight=0.5, boundary_width=4)
    assert "boundary" not in plain
    assert torch.allclose(terms["loss"], plain["loss"] + 0.5 * terms["boundary"])
    terms["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0, 30, 30] != 0


def test_pairs_are_reproducible_and_well_formed(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(tmp_path / f"im{i}.png", (rng.random((70, 90, 3)) * 255).astype(np.uint8))
    recipe = PairRecipe(resize=64, crop=48)
    ds1 = FocusPairs(sorted(tmp_path.glob("*.png")), samples_per_image=2, seed=5, recipe=recipe)
    ds2 = FocusPairs(sorted(tmp_path.glob("*.png")), samples_per_image=2, seed=5, recipe=recipe)
    assert len(ds1) == 6
    for i in range(len(ds1)):
        a1, b1, m1 = ds1[i]
        a2, b2, m2 = ds2[i]
        assert torch.equal(a1, a2) and torch.equal(b1, b2) and torch.equal(m1, m2)
        assert a1.shape == (1, 48, 48) and 0.1 <= float(m1.mean()) <= 0.9
        assert float(a1.min()) >= 0 and float(a1.max()) <= 1
    ds1.set_epoch(1)
    assert not torch.equal(ds1[0][0], ds2[0][0])  # a new epoch draws new pairs


def test_pair_has_a_in_focus_where_the_mask_is_one():
    import cv2

    sharp = _real_image()[100:228, 100:228]
    mask = random_shapes_mask(128, 128, np.random.default_rng(3))
    recipe = PairRecipe(max_offset=0, max_noise=0)
    for seed in range(4):
        a, b, m = make_pair(sharp, mask, np.random.default_rng(seed), recipe)
        inside = cv2.erode(m, np.ones((15, 15))) > 0.5
        outside = cv2.erode(1 - m, np.ones((15, 15))) > 0.5
        lap_a, lap_b = np.abs(cv2.Laplacian(a, cv2.CV_32F)), np.abs(cv2.Laplacian(b, cv2.CV_32F))
        assert lap_a[inside].mean() > lap_b[inside].mean()
        assert lap_b[outside].mean() > lap_a[outside].mean()


def test_gain_knob_changes_only_the_exposure_of_b():
    sharp = _real_image()[100:228, 100:228]
    mask = random_shapes_mask(128, 128, np.random.default_rng(3))
    plain = make_pair(sharp, mask, np.random.default_rng(0), PairRecipe(max_offset=0, max_noise=0))
    gained = make_pair(sharp, mask, np.random.default_rng(0), PairRecipe(max_offset=0, max_noise=0, max_gain=0.1))
    a, b, m = gained
    if not np.array_equal(plain[2], m):  # the extra draw may change the A/B swap: undo it
        a, b, m = b, a, 1.0 - m
    a_or_b = [not np.array_equal(p, g) for p, g in zip(plain[:2], (a, b))]
    assert sum(a_or_b) == 1 and np.array_equal(plain[2], m)  # one frame (B before the swap) is rescaled
    k = a_or_b.index(True)
    ratio = (a, b)[k].mean() / plain[k].mean()
    assert 0.9 <= ratio <= 1.1 and ratio != 1.0


def test_edge_bands_touch_one_or_two_edges_within_the_width():
    for seed in range(20):
        band = edge_bands((40, 50), 5, np.random.default_rng(seed))
        assert not band[5:-5, 5:-5].any() and band.any()
        edges = [band[0].all(), band[-1].all(), band[:, 0].all(), band[:, -1].all()]
        assert 1 <= sum(edges) <= 2


def test_border_knob_fills_one_frame_and_labels_the_other():
    sharp = _real_image()[100:228, 100:228]
    mask = random_shapes_mask(128, 128, np.random.default_rng(3))
    recipe = PairRecipe(max_offset=0, max_noise=0, max_border=6, border_fraction=1.0)
    seen = set()
    for seed in range(12):
        plain = make_pair(sharp, mask, np.random.default_rng(seed), PairRecipe(max_offset=0, max_noise=0))
        a, b, m = make_pair(sharp, mask, np.random.default_rng(seed), recipe)
        if np.mean(a != plain[0]) > 0.5:
            a, b, m = b, a, 1.0 - m  # the extra draws changed the A/B swap: undo it
        changed_a, changed_b = a != plain[0], b != plain[1]
        assert changed_a.any() != changed_b.any()  # exactly one frame has bands
        filled, other = (a, b) if changed_a.any() else (b, a)
        band = changed_a | changed_b
        assert band[0].all() or band[-1].all() or band[:, 0].all() or band[:, -1].all()
        assert np.ptp(filled[band]) == 0 and filled[band][0] <= 0.15  # flat dark fill
        label_of_other = 0.0 if filled is a else 1.0
        assert np.all(m[band] == label_of_other)
        assert np.array_equal(m[~band], plain[2][~band]) and np.array_equal(other, plain[1 if filled is a else 0])
        seen.add(filled is a)
    assert seen == {True, False}  # both frames get bands sometimes
    assert PairRecipe(max_border=4).border_fraction > 0


def test_thin_structures_are_thin_and_cover_part_of_the_crop():
    import cv2

    covered, wide = [], []
    for seed in range(40):
        mask = thin_structures_mask(156, 156, np.random.default_rng(seed))
        assert set(np.unique(mask)) <= {0.0, 1.0}
        covered.append(mask.mean())
        # bars and strands are at most 10 px wide: a 13 x 13 opening leaves only some of their crossings
        wide.append(cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((13, 13), np.uint8)).sum() / mask.sum())
    assert np.median(wide) < 0.01 and np.mean(wide) < 0.1
    assert 0.05 < np.median(covered) < 0.6


def test_thin_structures_are_painted_into_the_scene(tmp_path):
    import cv2

    sharp = _real_image()[100:228, 100:228]
    mask = thin_structures_mask(128, 128, np.random.default_rng(1))
    painted = paint_structures(sharp, mask, np.random.default_rng(2))
    inside, outside = cv2.erode(mask, np.ones((3, 3))) > 0.5, cv2.dilate(mask, np.ones((7, 7))) < 0.5
    assert np.array_equal(painted[outside], sharp[outside])  # the background is untouched
    assert np.std(painted[inside]) < np.std(sharp[inside])  # the structure is a tone of its own
    write_image(tmp_path / "im.png", (_real_image() * 255).astype(np.uint8))
    recipe = PairRecipe(resize=200, crop=128, thin_fraction=1.0, ramp_fraction=0.0)
    pairs = FocusPairs([tmp_path / "im.png"], samples_per_image=6, seed=0, recipe=recipe, fixed=True)
    plain = FocusPairs([tmp_path / "im.png"], samples_per_image=6, seed=0, recipe=PairRecipe(resize=200, crop=128),
                       fixed=True)
    for i in range(len(pairs)):
        a, b, m = (t[0].numpy() for t in pairs[i])
        assert not np.array_equal(m, plain[i][2][0].numpy())  # thin masks replace the usual ones
        ring = m > 0.5 if m.mean() < 0.5 else m < 0.5  # the thin part (the label may be swapped)
        opened = cv2.morphologyEx(ring.astype(np.uint8), cv2.MORPH_OPEN, np.ones((13, 13), np.uint8))
        assert opened.sum() < 0.4 * ring.sum()
    # on a flat scene only the painted structures give the frames any content
    write_image(tmp_path / "flat.png", np.full((200, 200), 128, np.uint8))
    for fraction, has_content in ((1.0, True), (0.0, False)):
        flat = FocusPairs([tmp_path / "flat.png"], samples_per_image=3, seed=0, fixed=True,
                          recipe=PairRecipe(resize=200, crop=128, thin_fraction=fraction, max_noise=0))
        assert all((float(a.std()) > 1e-4) == has_content for a, _, _ in (flat[i] for i in range(3)))


def test_recipe_overrides_parse_by_the_knobs_type():
    assert recipe_overrides(["max_gain=0.06", "disk-radius=1,8", "layered_fraction=0.5"]) == {
        "max_gain": 0.06, "disk_radius": (1.0, 8.0), "layered_fraction": 0.5}
    PairRecipe(**recipe_overrides(["max_gain=0.06"]))  # usable as is
    for bad in ["max_gain", "crop=64", "nothing=1", "max_gain=lots", "disk_radius=1", "max_gain=-0.1",
                "max_gain=nan", "disk_radius=5,2", "ramp_fraction=1.5"]:
        with pytest.raises(ValueError):
            recipe_overrides([bad])


def test_split_holds_out_every_tenth_image(tmp_path):
    for i in range(25):
        (tmp_path / f"{i}.png").write_bytes(b"")
    train, validation = split_images(tmp_path)
    assert [p.name for p in validation] == ["0.png", "10.png", "20.png"]
    assert len(train) == 22 and not set(train) & set(validation)


def test_training_smoke_lowers_the_loss_and_writes_loadable_weights(tmp_path, monkeypatch):
    """20 iterations on tiny crops (CPU)."""
    from click.testing import CliRunner

    from focusfuse.cli import main

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    images, segments = tmp_path / "images", tmp_path / "segments"
    images.mkdir()
    segments.mkdir()
    rng = np.random.default_rng(1)
    base = _real_image("astronaut")
    for i in range(10):
        y, x = rng.integers(0, 400, 2)
        write_image(images / f"img{i}.png", np.round(base[y:y + 80, x:x + 80] * 255).astype(np.uint8))
        labels = np.ones((80, 80), np.uint16)
        labels[:, 40:] = 2
        write_image(segments / f"img{i}.png", labels)
    out = tmp_path / "run"
    def args(epochs: int) -> list[str]:
        return ["train", "--images", str(images), "--segments", str(segments), "--out", str(out), "--epochs",
                str(epochs), "--batch-size", "4", "--crop", "40", "--samples-per-image", "10", "--max-steps", "10",
                "--lr", "1e-3", "--device", "cpu", "--name", "smoke", "-q"]

    result = CliRunner().invoke(main, args(2))
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and log[1]["train_loss"] < log[0]["train_loss"]
    model = load_model("smoke")  # installed in the user data dir
    assert model.metadata["epoch"] in (1, 2)
    assert (out / "curves.png").stat().st_size > 0 and (out / "last.pt").exists()
    last = load_model(out / "last.pt")  # a run's checkpoint is usable as --weights too
    assert last.metadata["epoch"] == 2 and last.metadata["source"] == "training checkpoint"
    again = CliRunner().invoke(main, args(2))
    assert again.exit_code == 2  # refuses to clobber a run without --resume
    bad = CliRunner().invoke(main, args(2) + ["--recipe", "max_gain=a lot"])
    assert bad.exit_code == 2 and "--recipe" in bad.output
    other_recipe = CliRunner().invoke(main, args(3) + ["--resume", "--recipe", "max_gain=0.05"])
    assert other_recipe.exit_code == 2 and "none (the defaults)" in other_recipe.output
    other_loss = CliRunner().invoke(main, args(3) + ["--resume", "--symmetric-dice"])
    assert other_loss.exit_code == 2 and "symmetric_dice=False" in other_loss.output
    assert "(--symmetric-dice)" in other_loss.output  # the library names its option, the CLI the flag
    other_boundary = CliRunner().invoke(main, args(3) + ["--resume", "--boundary-weight", "1"])
    assert other_boundary.exit_code == 2 and "boundary_weight=0.0" in other_boundary.output
    resumed = CliRunner().invoke(main, args(3) + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len((out / "log.jsonl").read_text().splitlines()) == 3


def test_runs_that_cannot_train_or_would_replace_installed_weights_are_refused_up_front(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from focusfuse.cli import main

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "only.png", np.round(_real_image("astronaut")[:64, :64] * 255).astype(np.uint8))

    def run(out: str, *extra: str):
        return CliRunner().invoke(main, ["train", "--images", str(images), "--out", str(tmp_path / out),
                                         "--device", "cpu", "-q", *extra])

    one = run("one")
    assert one.exit_code == 2 and "1 image(s); training needs at least 2" in one.stderr
    for i in range(1, 4):  # 4 images: 3 for training, 1 held out
        write_image(images / f"more{i}.png", np.round(_real_image("astronaut")[64 * i:64 * i + 64, :64] * 255)
                    .astype(np.uint8))
    few = run("few", "--samples-per-image", "4", "--batch-size", "16")
    assert few.exit_code == 2 and "12 pairs per epoch, fewer than the batch size 16" in few.stderr
    installed = tmp_path / "data" / "focusfuse" / "weights" / "taken.pt"
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"someone's weights")
    taken = run("taken", "--batch-size", "4")
    assert taken.exit_code == 2 and "weights named 'taken' are installed already" in taken.stderr
    assert installed.read_bytes() == b"someone's weights"
    for result in (one, few, taken):
        assert len(result.stderr.splitlines()) == 1
    assert not [p for p in tmp_path.iterdir() if p.name in ("one", "few", "taken")]  # no empty run folders


def test_sloped_segment_depth_is_a_tilted_plane_per_segment_with_edges_between():
    from focusfuse.train.data import sloped_segment_depth

    segments = np.zeros((60, 80), np.uint8)
    segments[:, 40:] = 1
    segments[10:30, 10:30] = 2
    depth = sloped_segment_depth(segments, np.random.default_rng(3), slope=0.5)
    assert depth.dtype == np.float32 and depth.min() == 0.0 and depth.max() == 1.0
    for label in (0, 1, 2):  # planar inside each segment: second differences vanish
        inside = segments == label
        rows, cols = np.nonzero(inside)
        patch = depth[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        mask = inside[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        if mask.all():
            assert np.abs(np.diff(patch, 2, axis=0)).max() < 1e-5 and np.abs(np.diff(patch, 2, axis=1)).max() < 1e-5
            assert np.ptp(patch) > 1e-3  # tilted, not flat
    jump = np.abs(depth[:, 40] - depth[:, 39])  # across the outline between segments 0 and 1
    step = np.abs(depth[:, 39] - depth[:, 38])  # within segment 0
    assert jump.mean() > 5 * step.mean()


def test_a_run_folder_that_is_a_file_or_unreadable_init_weights_are_refused_before_any_work(tmp_path):
    from click.testing import CliRunner

    from focusfuse.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        write_image(images / f"i{i}.png", np.full((48, 48), 10 * i, np.uint8))
    (tmp_path / "file.png").write_bytes(b"x")
    args = ["train", "--images", str(images), "--epochs", "1", "--batch-size", "2", "--crop", "32", "-q"]
    as_file = CliRunner().invoke(main, args + ["--out", str(tmp_path / "file.png")])
    assert as_file.exit_code == 2 and "is a file, not a run folder (--out)" in as_file.output
    bad_init = CliRunner().invoke(main, args + ["--out", str(tmp_path / "run"), "--init", str(tmp_path / "file.png")])
    assert bad_init.exit_code == 2 and "(--init)" in bad_init.output
    assert not (tmp_path / "run").exists()
