"""The bad-input corpus: every case gets one clear stderr line, the right exit code, no traceback and no
output file; gray frames mixed with colour ones succeed with a one-line warning."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner

from focusfuse.cli import main
from focusfuse.io.images import read_image, write_image

from conftest import textured


def _rgb8(seed, h=20, w=24):
    return np.round(textured(h, w, seed, 3) * 255).astype(np.uint8)


@pytest.fixture
def corpus(tmp_path) -> dict[str, Path]:
    """Inputs generated for the cases below."""
    c = {}
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        write_image(good / f"f{i}.png", _rgb8(i))
    c["good"] = good
    c["empty_dir"] = tmp_path / "empty"
    c["empty_dir"].mkdir()
    one = tmp_path / "one"
    one.mkdir()
    write_image(one / "only.png", _rgb8(1))
    c["one"] = one

    def folder_with(name, extra_name, writer, good=_rgb8, suffix=".png"):
        folder = tmp_path / name
        folder.mkdir()
        write_image(folder / f"a{suffix}", good(1))
        write_image(folder / f"b{suffix}", good(2))
        writer(folder / extra_name)
        return folder

    def gray_float(seed):
        return textured(20, 24, seed)

    c["corrupt"] = folder_with("corrupt", "c.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnot an image"))
    jpeg = (tmp_path / "x.jpg")
    write_image(jpeg, _rgb8(3))
    data = jpeg.read_bytes()
    c["truncated"] = folder_with("truncated", "c.jpg", lambda p: p.write_bytes(data[: len(data) // 2]))
    png = tmp_path / "x.png"
    write_image(png, _rgb8(3))
    c["truncated_png"] = folder_with("truncated_png", "c.png", lambda p: p.write_bytes(png.read_bytes()[:-40]))
    c["zero_bytes"] = folder_with("zero_bytes", "c.png", lambda p: p.write_bytes(b""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns that a zero-size TIFF is nonconformant: that is the point
        c["zero_size"] = folder_with("zero_size", "c.tif", lambda p: tifffile.imwrite(p, np.zeros((0, 24), np.uint8)),
                                     lambda seed: np.round(textured(20, 24, seed) * 255).astype(np.uint8), ".tif")
    c["mismatched"] = folder_with("mismatched", "c.png", lambda p: write_image(p, _rgb8(4, 22, 24)))
    nan = np.full((20, 24), 0.5, np.float32)
    nan[3, 3] = np.nan
    c["nan"] = folder_with("nan", "c.tif", lambda p: tifffile.imwrite(p, nan), gray_float, ".tif")
    inf = np.full((20, 24), 0.5, np.float32)
    inf[3, 3] = np.inf
    c["inf"] = folder_with("inf", "c.tif", lambda p: tifffile.imwrite(p, inf), gray_float, ".tif")
    c["not_image"] = folder_with("not_image", "c.gif", lambda p: p.write_bytes(b"GIF89a"))
    c["text_file"] = tmp_path / "notes.txt"
    c["text_file"].write_text("hello")
    mixed = tmp_path / "mixed_depth"
    mixed.mkdir()
    write_image(mixed / "a.png", _rgb8(1))
    write_image(mixed / "b.png", np.round(textured(20, 24, 2, 3) * 65535).astype(np.uint16))
    c["mixed_depth"] = mixed
    channels = tmp_path / "mixed_channels"
    channels.mkdir()
    write_image(channels / "a.png", _rgb8(1))
    write_image(channels / "b.png", np.round(textured(20, 24, 2) * 255).astype(np.uint8))
    c["mixed_channels"] = channels
    return c


ERRORS = [
    # (case, inputs, output name, extra args, exit code, message)
    ("missing path", "{tmp}/nope", "out.png", [], 2, "no such file"),
    ("empty folder", "{empty_dir}", "out.png", [], 2, "holds no images"),
    ("one frame", "{one}", "out.png", [], 2, "at least 2 frames"),
    ("corrupt file", "{corrupt}", "out.png", [], 1, "not a readable image"),
    ("truncated file", "{truncated}", "out.png", [], 1, "not a readable image"),
    ("truncated PNG", "{truncated_png}", "out.png", [], 1, "truncated PNG"),
    ("zero-byte file", "{zero_bytes}", "out.png", [], 1, "empty file"),
    ("zero-size image", "{zero_size}", "out.png", [], 1, "no pixels"),
    ("mismatched sizes", "{mismatched}", "out.png", [], 1, "differs from the first frame"),
    ("NaN in float TIFF", "{nan}", "out.png", [], 1, "NaN or infinite"),
    ("inf in float TIFF", "{inf}", "out.png", [], 1, "NaN or infinite"),
    ("unsupported input type", "{text_file}", "out.png", [], 2, "unsupported file type"),
    ("unknown output extension", "{good}", "out.gif", [], 2, "unknown output type"),
    ("output folder missing", "{good}", "missing/out.png", [], 2, "does not exist"),
    ("output equal to an input", "{good}", "good/f0.png", ["--overwrite"], 2, "overwrite an input"),
    ("existing output", "{good}", "exists.png", [], 2, "exists"),
    ("CUDA absent", "{good}", "out.png", ["--device", "cuda"], 2, "CUDA is not available"),
    ("bad device name", "{good}", "out.png", ["--device", "tpu"], 2, "device 'tpu'"),
    ("unreadable weights", "{good}", "out.png", ["--weights", "{corrupt}/c.png"], 2, "cannot read weights"),
    ("mixed bit depths", "{mixed_depth}", "out.tif", [], 1, "16-bit frame among 8-bit frames"),
    ("tile size too small", "{good}", "out.png", ["--tile-size", "3"], 2, "at least 16"),
    ("tile size negative", "{good}", "out.png", ["--tile-size", "-5"], 2, "tile size"),
    ("reduce zero", "{good}", "out.png", ["--reduce", "0"], 2, "reduce must be"),
    ("memory limit not a size", "{good}", "out.png", ["--memory-limit", "lots"], 2, "give a size such as 4G"),
    ("memory limit too small", "{good}", "out.png", ["--memory-limit", "1M"], 2, "at least 256 MiB"),
    ("workers negative", "{good}", "out.png", ["--workers", "-1"], 2, "workers must be"),
    ("unknown option", "{good}", "out.png", ["--bogus"], 2, "No such option"),
    ("z step not a number", "{good}", "out.png", ["--height-map", "{tmp}/h.tif", "--z-step", "nan"], 2, "focus step"),
    ("z step zero", "{good}", "out.png", ["--height-map", "{tmp}/h.tif", "--z-step", "0"], 2, "focus step"),
    ("height map without z step", "{good}", "out.png", ["--height-map", "{tmp}/h.tif"], 2, "needs the focus step"),
    ("depth smoothing too wide", "{good}", "out.png", ["--depth-smooth", "1000"], 2, "depth smoothing radius"),
]


@pytest.mark.parametrize("case,inputs,output,extra,code,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_gives_one_line(corpus, tmp_path, weights_file, case, inputs, output, extra, code, message):
    if case == "CUDA absent" and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    values = {k: str(v) for k, v in corpus.items()} | {"tmp": str(tmp_path)}
    out = tmp_path / output
    if case == "existing output":
        out.write_bytes(b"precious")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    args = ["stack", inputs.format(**values), "-o", str(out), "--align", "none"] + [a.format(**values) for a in extra]
    if "--weights" not in args:
        args += ["--weights", str(weights_file)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines  # no blank lines, no usage block
    assert lines[0].startswith("focusfuse: error:") and message in lines[0], lines[0]
    assert "Traceback" not in result.output
    if case == "existing output":
        assert out.read_bytes() == b"precious"
    elif case != "output equal to an input":
        assert not out.exists()
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if p in before} == before  # nothing touched
    assert not [p for p in after if p not in before and p.name.startswith(".")]  # no partial files


def test_debug_shows_the_traceback(corpus, tmp_path, weights_file):
    r = CliRunner().invoke(main, ["stack", str(corpus["corrupt"]), "-o", str(tmp_path / "o.png"), "--align", "none",
                                  "--weights", str(weights_file), "--debug"])
    assert r.exit_code == 1 and "Traceback" in r.stderr


def test_unwritable_output_folder(corpus, tmp_path, weights_file, monkeypatch):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root ignores permission bits: make the check see them
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == folder else real_access(p, m))
    try:
        r = CliRunner().invoke(main, ["stack", str(corpus["good"]), "-o", str(folder / "out.png"), "--align", "none",
                                      "--weights", str(weights_file)])
    finally:
        folder.chmod(0o700)
    assert r.exit_code == 2 and "not writable" in r.stderr
    assert not (folder / "out.png").exists()


def test_gray_mixed_with_colour_warns_in_one_line_and_succeeds(corpus, tmp_path, weights_file):
    out = tmp_path / "out.tif"
    r = CliRunner().invoke(main, ["stack", str(corpus["mixed_channels"]), "-o", str(out), "--align", "none",
                                  "--weights", str(weights_file), "-q"])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("focusfuse: warning:") and "gray and colour" in lines[0]
    fused = read_image(out)
    assert fused.dtype == np.uint8 and fused.shape == (20, 24, 3)


def test_out_of_memory_is_one_line(corpus, tmp_path, weights_file, monkeypatch):
    import focusfuse.methods.gacn.strategies as strategies

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(strategies.CalibratedStack, "add_batch", exhausted)
    out = tmp_path / "o.png"
    r = CliRunner().invoke(main, ["stack", str(corpus["good"]), "-o", str(out), "--align", "none",
                                  "--weights", str(weights_file)])
    assert r.exit_code == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "out of memory" in lines[0] and not out.exists()


def test_messages_printed_by_c_decoders_are_kept_off_stderr(tmp_path, weights_file):
    """libpng writes to the process's stderr itself, past Python: only a real process shows it. (It does so
    for frames large enough to be read in several chunks: 96 x 96 here.)"""
    import subprocess
    import sys

    folder = tmp_path / "stack"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"f{i}.png", np.round(textured(96, 96, i, 3) * 255).astype(np.uint8))
    whole = (folder / "f2.png").read_bytes()
    (folder / "f2.png").write_bytes(whole[: len(whole) // 2])
    run = subprocess.run([sys.executable, "-m", "focusfuse.cli", "stack", str(folder), "-o", str(tmp_path / "out.png"),
                          "--align", "none", "--weights", str(weights_file)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.splitlines() == [f"focusfuse: error: {folder / 'f2.png'}: truncated PNG (the file ends early)"]


# ------------------------------------------------------------------ the library API: bad arguments, own errors

def _frames():
    return [np.round(textured(24, 32, seed, 3) * 255).astype(np.uint8) for seed in (1, 2)]


@pytest.mark.parametrize("frames,message", [
    (lambda a, b: [torch.from_numpy(a), b], "frame 1: a path or a numpy array, not Tensor"),
    (lambda a, b: [a, a.tolist()], "frame 2: a path or a numpy array, not list"),
    (lambda a, b: [None, b], "frame 1: a path or a numpy array, not NoneType"),
    (lambda a, b: 3, "frames: paths or numpy arrays, not int"),
    (lambda a, b: [np.zeros((24, 32, 5)), np.zeros((24, 32, 5))],
     r"frame 1: shape \(24, 32, 5\): a frame is \(Y, X\) or \(Y, X, C\) with 1, 3 or 4 channels"),
])
def test_frames_that_are_not_frames_are_refused_by_name(frames, message):
    from focusfuse import UsageError, fuse_stack

    a, b = _frames()
    with pytest.raises(UsageError, match=message):
        fuse_stack(frames(a, b), device="cpu", align="none")


def test_a_single_array_of_more_than_four_columns_is_still_a_stack():
    from focusfuse import fuse_stack

    stack = np.stack([textured(24, 32, seed) for seed in (1, 2)])  # (Z, Y, X)
    assert fuse_stack(stack, device="cpu", align="none", method="wavelet").fused.shape == (24, 32)


@pytest.mark.parametrize("options,message", [
    ({"edge_fill": "no"}, "edge_fill must be True or False, not 'no'"),
    ({"crop": 1}, "crop must be True or False, not 1"),
    ({"progress": 3}, "progress must be a function"),
    ({"align_progress": "x"}, "align_progress must be a function"),
])
def test_flags_and_callbacks_of_the_wrong_kind_are_refused(options, message):
    from focusfuse import UsageError, fuse_stack

    with pytest.raises(UsageError, match=message):
        fuse_stack(_frames(), device="cpu", align="none", **options)


def test_read_and_write_image_refuse_what_they_cannot_take(tmp_path):
    from focusfuse import UsageError

    png = write_image(tmp_path / "a.png", _frames()[0])
    with pytest.raises(UsageError, match="only TIFF files have pages"):
        read_image(png, page=1)
    with pytest.raises(UsageError, match="read_image takes a path, not ndarray"):
        read_image(_frames()[0])
    for image, message in ((torch.zeros(4, 4), "takes a numpy array, not Tensor"),
                           (np.zeros((0, 0, 3), np.uint8), "has no pixels"),
                           (np.array([[0.5, np.nan]], np.float32), "NaN or infinite")):
        for suffix in (".png", ".tif"):
            with pytest.raises(UsageError, match=message):
                write_image(tmp_path / f"bad{suffix}", image)
    assert not list(tmp_path.glob("bad*"))
    one_channel = np.round(textured(8, 8, 3)[:, :, None] * 255).astype(np.uint8)
    for suffix in (".png", ".tif"):
        back = read_image(write_image(tmp_path / f"one{suffix}", one_channel))
        assert back.shape == (8, 8) and np.array_equal(back, one_channel[:, :, 0])


def test_depth_functions_refuse_bad_maps_and_settings():
    from focusfuse import UsageError, depth_preview, height_map, smooth_index_map

    index = np.array([[0, 1, 4], [2, 3, 4]], np.uint16)
    for call, message in ((lambda: smooth_index_map(index, 1000), "depth smoothing radius must be an integer from"),
                          (lambda: smooth_index_map(index, 1.5), "depth smoothing radius must be an integer"),
                          (lambda: smooth_index_map(index, -1), "depth smoothing radius must be an integer"),
                          (lambda: height_map(index, None), "focus step None"),
                          (lambda: height_map(index, float("nan")), "focus step nan"),
                          (lambda: height_map(index, "1"), "focus step '1'"),
                          (lambda: depth_preview(index, 3), r"frame numbers from 0 to 4, outside 0..2 for 3 frames"),
                          (lambda: depth_preview(index, 2.5), "number of frames must be an integer"),
                          (lambda: depth_preview(np.stack([index] * 3, -1), 5), "HxW numpy array"),
                          (lambda: depth_preview(np.zeros((0, 0), np.uint16), 5), "non-empty HxW"),
                          (lambda: smooth_index_map(torch.zeros(2, 2), 1), "not Tensor")):
        with pytest.raises(UsageError, match=message):
            call()
    assert np.array_equal(height_map(index, 2), index * 2.0)
    assert depth_preview(index, 5).shape[:2][0] == 2 and smooth_index_map(index, 0) is index
