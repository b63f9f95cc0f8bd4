"""Evaluation of fused-image folders: case discovery, reading, summaries and output files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from focusfuse.io.images import write_image

from focusfuse.evaluation.evaluate import (
    Case,
    evaluate_cases,
    find_cases,
    natural_key,
    summarize,
    write_csv,
    write_json,
)
from focusfuse.evaluation.metrics import METRIC_NAMES, compute_all, to_gray_matlab

SIZE = (40, 44)


def texture(seed: int) -> np.ndarray:
    """A smooth uint8 texture."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random(SIZE) * 255, 1.5)
    return np.round((img - img.min()) / np.ptp(img) * 255).astype(np.uint8)


def colour(seed: int) -> np.ndarray:
    return np.dstack([texture(seed), texture(seed + 100), texture(seed + 200)])


def write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, img)
    else:
        write_image(path, img)
    return path


@pytest.fixture
def pairs(tmp_path: Path) -> tuple[Path, Path]:
    """SOURCES with NAME_k files (two pairs and one 3-source set) and FUSED with NAME_fused files."""
    sources, fused = tmp_path / "sources", tmp_path / "fused"
    for name, count in (("scene10", 2), ("scene2", 2), ("triple", 3)):
        for k in range(1, count + 1):
            write(sources / f"{name}_{k}.png", texture(k))
        write(fused / f"{name}_fused.png", texture(7))
    (sources / "notes.txt").write_text("not an image")
    return sources, fused


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["img10.png", "img2.png", "Img1.png", "img2b.png"]
    assert sorted(names, key=natural_key) == ["Img1.png", "img2.png", "img2b.png", "img10.png"]


def test_find_cases_in_a_pairs_folder(pairs: tuple[Path, Path]) -> None:
    sources, fused = pairs
    cases = find_cases(sources, fused, suffix="_fused")
    assert [c.name for c in cases] == ["scene2", "scene10", "triple"]
    assert cases[0] == Case(
        name="scene2",
        sources=(sources / "scene2_1.png", sources / "scene2_2.png"),
        fused=fused / "scene2_fused.png",
        gt=None,
    )
    assert [p.name for p in cases[2].sources] == ["triple_1.png", "triple_2.png", "triple_3.png"]


def test_numbered_sources_are_ordered_by_number(tmp_path: Path) -> None:
    for k in (1, 2, 10):
        write(tmp_path / "src" / f"s_{k}.png", texture(k))
    write(tmp_path / "out" / "s.png", texture(0))
    (case,) = find_cases(tmp_path / "src", tmp_path / "out")
    assert [p.name for p in case.sources] == ["s_1.png", "s_2.png", "s_10.png"]


def test_find_cases_in_a_folder_of_stacks(tmp_path: Path) -> None:
    for frame in ("img10.png", "img2.png", "img1.png"):
        write(tmp_path / "stacks" / "chip" / frame, texture(len(frame)))
    write(tmp_path / "stacks" / "leaf" / "a.tif", texture(1))
    write(tmp_path / "stacks" / "leaf" / "b.tif", texture(2))
    write(tmp_path / "fused" / "chip.png", texture(3))
    write(tmp_path / "fused" / "leaf.tif", texture(4))
    chip, leaf = find_cases(tmp_path / "stacks", tmp_path / "fused")
    assert chip.name == "chip" and [p.name for p in chip.sources] == ["img1.png", "img2.png", "img10.png"]
    assert leaf.fused == tmp_path / "fused" / "leaf.tif"


def test_suffix_selects_the_fused_files(pairs: tuple[Path, Path]) -> None:
    sources, fused = pairs
    with pytest.raises(ValueError, match="missing fused"):
        find_cases(sources, fused)  # no suffix: looks for scene2.* etc.
    for name in ("scene2", "scene10", "triple"):
        write(fused / f"{name}.png", texture(9))
    assert all(c.fused.name == f"{c.name}.png" for c in find_cases(sources, fused))


def test_missing_fused_images_are_all_named_on_one_line(pairs: tuple[Path, Path]) -> None:
    sources, fused = pairs
    (fused / "scene2_fused.png").unlink()
    (fused / "triple_fused.png").unlink()
    with pytest.raises(ValueError) as info:
        find_cases(sources, fused, suffix="_fused")
    message = str(info.value)
    assert "\n" not in message
    assert "scene2_fused.*" in message and "triple_fused.*" in message and "scene10" not in message


def test_ground_truth_folder(pairs: tuple[Path, Path], tmp_path: Path) -> None:
    sources, fused = pairs
    gt = tmp_path / "gt"
    for name in ("scene2", "scene10"):
        write(gt / f"{name}.png", texture(5))
    with pytest.raises(ValueError, match=r"missing ground-truth image\(s\) in .*: triple\.\*$"):
        find_cases(sources, fused, suffix="_fused", gt_dir=gt)
    write(gt / "triple.png", texture(5))
    cases = find_cases(sources, fused, suffix="_fused", gt_dir=gt)
    assert [c.gt for c in cases] == [gt / "scene2.png", gt / "scene10.png", gt / "triple.png"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda src, out: write(src / "lonely_1.png", texture(1)), "single image"),
        (lambda src, out: write(out / "scene2_fused.jpg", texture(1)), "ambiguous"),
        (lambda src, out: write(src / "scene2" / "frame.png", texture(1)), "both"),
    ],
)
def test_inconsistent_folders_are_rejected(pairs: tuple[Path, Path], make, message: str) -> None:
    sources, fused = pairs
    make(sources, fused)
    with pytest.raises(ValueError, match=message):
        find_cases(sources, fused, suffix="_fused")


def test_empty_or_absent_folders_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no source sets"):
        find_cases(tmp_path / "empty", tmp_path / "empty")
    with pytest.raises(ValueError, match="not found"):
        find_cases(tmp_path / "absent", tmp_path / "empty")


def test_evaluate_cases_reads_converts_and_reports_progress(tmp_path: Path) -> None:
    a, b, fused, gt = colour(1), colour(2), colour(3), colour(4)
    write(tmp_path / "src" / "x_1.png", a)
    write(tmp_path / "src" / "x_2.png", b)
    write(tmp_path / "out" / "x.png", fused)
    write(tmp_path / "gt" / "x.png", gt)
    write(tmp_path / "src" / "y_1.png", a[:, :, 0])
    write(tmp_path / "src" / "y_2.png", b[:, :, 0])
    write(tmp_path / "out" / "y.png", fused[:, :, 0])
    write(tmp_path / "gt" / "y.png", gt[:, :, 0])
    calls = []
    cases = find_cases(tmp_path / "src", tmp_path / "out", gt_dir=tmp_path / "gt")
    rows = evaluate_cases(cases, progress=lambda i, n, name: calls.append((i, n, name)))

    assert calls == [(1, 2, "x"), (2, 2, "y")]
    assert list(rows[0]) == ["name", *METRIC_NAMES, "PSNR", "SSIM"]
    expected = compute_all([to_gray_matlab(a), to_gray_matlab(b)], to_gray_matlab(fused), to_gray_matlab(gt))
    assert rows[0] == {"name": "x", **expected}
    expected_gray = compute_all([a[:, :, 0], b[:, :, 0]], fused[:, :, 0], gt[:, :, 0])
    assert rows[1] == {"name": "y", **expected_gray}


def test_16_bit_images_give_the_8_bit_metrics(tmp_path: Path) -> None:
    eight = [texture(1), texture(2), texture(3)]
    for folder, dtype, scale in (("u8", np.uint8, 1), ("u16", np.uint16, 257)):
        write(tmp_path / folder / "s" / "p_1.tif", eight[0].astype(dtype) * dtype(scale))
        write(tmp_path / folder / "s" / "p_2.png", eight[1].astype(dtype) * dtype(scale))
        write(tmp_path / folder / "f" / "p.tif", eight[2].astype(dtype) * dtype(scale))
    rows8 = evaluate_cases(find_cases(tmp_path / "u8" / "s", tmp_path / "u8" / "f"))
    rows16 = evaluate_cases(find_cases(tmp_path / "u16" / "s", tmp_path / "u16" / "f"))
    assert rows16 == rows8


def test_float_files_are_read_on_focusfuses_0_to_1_scale(tmp_path: Path) -> None:
    """Float TIFFs hold 0..1, as focusfuse writes them: the same (gray) images score the same as 8-bit."""
    eight = [texture(1), texture(2), texture(3)]
    for folder, convert in (("u8", lambda x: x), ("f32", lambda x: x.astype(np.float32) / 255)):
        write(tmp_path / folder / "s" / "p_1.tif", convert(eight[0]))
        write(tmp_path / folder / "s" / "p_2.tif", convert(eight[1]))
        write(tmp_path / folder / "f" / "p.tif", convert(eight[2]))
        write(tmp_path / folder / "gt" / "p.tif", convert(eight[0]))
    rows8 = evaluate_cases(find_cases(tmp_path / "u8" / "s", tmp_path / "u8" / "f", gt_dir=tmp_path / "u8" / "gt"))
    rows32 = evaluate_cases(find_cases(tmp_path / "f32" / "s", tmp_path / "f32" / "f", gt_dir=tmp_path / "f32" / "gt"))
    for key, value in rows8[0].items():
        if key != "name":
            assert rows32[0][key] == pytest.approx(value, rel=1e-5, abs=1e-5), key


def test_mismatched_sizes_are_reported(tmp_path: Path) -> None:
    write(tmp_path / "s" / "p_1.png", texture(1))
    write(tmp_path / "s" / "p_2.png", texture(2))
    write(tmp_path / "f" / "p.png", texture(3)[:-2])
    with pytest.raises(ValueError, match="p: image sizes differ"):
        evaluate_cases(find_cases(tmp_path / "s", tmp_path / "f"))


ROWS = [
    {"name": "a", "Qg": 0.5, "Qy": 1.0, "PSNR": float("inf")},
    {"name": "b", "Qg": 0.7, "Qy": 0.0, "PSNR": 30.0},
]


def test_summarize_means_every_metric() -> None:
    means = summarize(ROWS)
    assert list(means) == ["Qg", "Qy", "PSNR"]
    assert means["Qg"] == pytest.approx(0.6) and means["Qy"] == 0.5 and means["PSNR"] == float("inf")
    assert summarize([]) == {}


def test_write_json_is_strict_and_holds_rows_and_means(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_json(ROWS, path)
    document = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert document["cases"][0] == {"name": "a", "Qg": 0.5, "Qy": 1.0, "PSNR": None}
    assert document["cases"][1] == ROWS[1]
    assert document["mean"] == {"Qg": pytest.approx(0.6), "Qy": 0.5, "PSNR": None}


def test_write_csv_round_trips_full_precision(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    rows = [{"name": "a", "Qg": 1 / 3, "Qy": 0.25}, {"name": "b", "Qg": 0.1, "Qy": 2 / 3}]
    write_csv(rows, path)
    with path.open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == ["name", "Qg", "Qy"]
    assert [{k: (v if k == "name" else float(v)) for k, v in r.items()} for r in read] == rows
