"""Stack jobs end to end: alignment in the pipeline, depth/height maps, --align-only, --json, metadata."""

import json

import cv2
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from focusfuse import fuse_stack
from focusfuse.cli import main
from focusfuse.jobs.depth import depth_preview, height_map, smooth_index_map, z_spacing
from focusfuse.io.images import read_image, write_image
from focusfuse.engine.options import FusionOptions
from focusfuse.jobs.stack_job import StackJob, run_stack
from focusfuse.evaluation.synthetic import make_stack

from conftest import textured


def _similarity(scale: float, dx: float, dy: float, shape) -> np.ndarray:
    h, w = shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return np.array([[scale, 0, cx - scale * cx + dx], [0, scale, cy - scale * cy + dy]], np.float64)


@pytest.fixture(scope="module")
def breathing_stack():
    """5-frame stack with focus breathing (scale 0.97..1.03) and drift, plus the truth in the middle frame's geometry."""
    from focusfuse.jobs.demo import motorcycle_scene

    image, disparity = motorcycle_scene(0.4)
    stack = make_stack(image, disparity, 5, max_blur=3.0)
    shape = image.shape[:2]
    frames = []
    for k, frame in enumerate(stack.frames):
        m = _similarity(1 + 0.015 * (k - 2), 1.5 * (k - 2), -1.0 * (k - 2), shape)
        warped = cv2.warpAffine(frame, m, (shape[1], shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.round(np.clip(warped, 0, 1) * 255).astype(np.uint8))
    return frames, stack.truth


def _psnr_inner(x, truth, margin=0.12):
    h, w = truth.shape[:2]
    my, mx = int(h * margin), int(w * margin)
    d = x[my:-my, mx:-mx].astype(np.float64) / 255 - truth[my:-my, mx:-mx]
    return 10 * np.log10(1 / np.mean(d * d))


def test_alignment_removes_ghosting_from_breathing(good_model, breathing_stack):
    frames, truth = breathing_stack
    aligned = fuse_stack(frames, weights=good_model, device="cpu", align="auto")
    unaligned = fuse_stack(frames, weights=good_model, device="cpu", align="none")
    assert aligned.alignment is not None and not aligned.skipped
    assert _psnr_inner(aligned.fused, truth) > _psnr_inner(unaligned.fused, truth) + 2.0


def test_crop_keeps_the_area_valid_in_all_frames(good_model, breathing_stack):
    frames, _ = breathing_stack
    result = fuse_stack(frames, weights=good_model, device="cpu", align="auto", crop=True)
    x0, y0, x1, y1 = result.box
    assert result.fused.shape[:2] == (y1 - y0, x1 - x0) == result.index_map.shape
    assert x0 > 0 and y0 > 0 and x1 < frames[0].shape[1] and y1 < frames[0].shape[0]


def test_unalignable_frame_is_left_out_with_a_warning(model):
    base = np.round(textured(64, 64, 1, 3) * 255).astype(np.uint8)
    frames = [base, cv2.GaussianBlur(base, (0, 0), 1.0), np.zeros_like(base), cv2.GaussianBlur(base, (0, 0), 2.0)]
    with pytest.warns(UserWarning, match="left out"):
        result = fuse_stack(frames, weights=model, device="cpu", align="auto")
    # messages count frames from 1, as input errors do (the index map holds input indices, from 0)
    assert len(result.skipped) == 1 and result.skipped[0].startswith("frame 3: ")
    assert 2 not in np.unique(result.index_map)


def test_depth_helpers():
    index = np.zeros((20, 20), np.uint16)
    index[:, 10:] = 4
    index[5, 5] = 4  # speckle
    smooth = smooth_index_map(index, 1)
    assert smooth[5, 5] == 0 and smooth[0, 15] == 4
    assert height_map(index, 2.5).dtype == np.float32 and height_map(index, 2.5).max() == 10.0
    preview = depth_preview(index, 5, 2.5, "um")
    assert preview.dtype == np.uint8 and preview.shape[0] == 20 and preview.shape[1] > 20


def test_z_spacing_from_imagej_tiff(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint16), imagej=True, metadata={"spacing": 0.75, "unit": "um", "axes": "ZYX"})
    assert z_spacing(path) == (0.75, "µm")


@pytest.fixture
def stack_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"f{i}.png", np.round(textured(24, 32, i, 3) * 255).astype(np.uint8))
    return folder


def test_stack_job_writes_every_output_and_a_report(model, stack_folder, tmp_path):
    job = StackJob(inputs=[stack_folder], output=tmp_path / "out.tif", options=FusionOptions(align="none"),
                   index_map=tmp_path / "index.png", depth_preview=tmp_path / "preview.png",
                   height_map=tmp_path / "height.tif", z_step=2.0, z_unit="um")
    report = run_stack(job, model)
    assert read_image(tmp_path / "out.tif").shape == (24, 32, 3)
    index = read_image(tmp_path / "index.png")
    assert index.dtype == np.uint16 and index.max() <= 2
    height = read_image(tmp_path / "height.tif")
    assert height.dtype == np.float32 and np.allclose(height, index * 2.0)
    assert read_image(tmp_path / "preview.png").shape[2] == 3
    assert report["frames_used"] == 3 and report["width"] == 32 and report["peak_rss_mb"] > 0
    assert report["strategy"] == "calibrated" and report["device"] == "cpu"


def test_height_map_without_z_step_is_refused(model, stack_folder, tmp_path):
    from focusfuse.errors import UsageError

    job = StackJob(inputs=[stack_folder], output=tmp_path / "o.png", options=FusionOptions(align="none"),
                   height_map=tmp_path / "h.tif")
    with pytest.raises(UsageError, match="focus step"):
        run_stack(job, model)


def test_cli_json_progress_and_report(weights_file, stack_folder, tmp_path):
    out = tmp_path / "o.png"
    r = CliRunner().invoke(main, ["stack", str(stack_folder), "-o", str(out), "--json", "--align", "none",
                                  "--weights", str(weights_file), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events] == ["frame", "frame", "frame", "done"]
    assert events[-1]["frames_used"] == 3 and events[-1]["output"] == str(out)


def test_cli_json_ends_with_an_error_event_when_the_run_fails(weights_file, stack_folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for frame in sorted(stack_folder.iterdir())[:2]:
        (broken / frame.name).write_bytes(frame.read_bytes())
    (broken / "z9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = CliRunner().invoke(main, ["stack", str(broken), "-o", str(tmp_path / "o.png"), "--json", "--align", "none",
                                  "--weights", str(weights_file), "--device", "cpu"])
    assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1 and "z9.png" in r.stderr
    last = json.loads(r.stdout.splitlines()[-1])
    assert last == {"event": "error", "message": r.stderr.strip()[len("focusfuse: "):], "exit_code": 1}
    assert not (tmp_path / "o.png").exists()
    quiet = CliRunner().invoke(main, ["stack", str(broken), "-o", str(tmp_path / "o.png"), "--align", "none",
                                      "--weights", str(weights_file), "--device", "cpu"])
    assert quiet.exit_code == 1 and quiet.stdout == ""  # without --json, stdout stays empty


def test_cli_reduce_is_reported_and_noted_in_the_output(weights_file, stack_folder, tmp_path):
    import tifffile

    out = tmp_path / "o.tif"
    r = CliRunner().invoke(main, ["stack", str(stack_folder), "-o", str(out), "--json", "--align", "none",
                                  "--reduce", "2", "--weights", str(weights_file), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[-1])["reduce"] == 2
    assert read_image(out).shape == (24, 32, 3)
    with tifffile.TiffFile(out) as tif:
        assert "decision path at 1/2 resolution" in tif.pages[0].description
    bad = CliRunner().invoke(main, ["stack", str(stack_folder), "-o", str(tmp_path / "p.tif"), "--reduce", "0",
                                    "--weights", str(weights_file)])
    assert bad.exit_code == 2 and "reduce must be" in bad.output


def test_cli_align_only_writes_registered_frames(breathing_stack, tmp_path):
    frames, _ = breathing_stack
    folder = tmp_path / "in"
    folder.mkdir()
    for i, f in enumerate(frames):
        write_image(folder / f"img{i}.png", f)
    out = tmp_path / "aligned"
    r = CliRunner().invoke(main, ["stack", str(folder), "--align-only", str(out), "-q"])
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"img{i}.png" for i in range(5)]
    # the middle frame is the reference: written unchanged
    assert np.array_equal(read_image(out / "img2.png"), frames[2])
    # the first frame now lines up with the middle one much better than before
    before = np.abs(frames[0].astype(float) - frames[2]).mean()
    after = np.abs(read_image(out / "img0.png").astype(float) - frames[2]).mean()
    assert after < 0.8 * before


def test_write_aligned_frames_within_a_memory_limit_matches_the_default(breathing_stack, tmp_path):
    from focusfuse.jobs.aligned_frames import frames_in_flight, write_aligned_frames
    from focusfuse.engine.sources import opened_frames
    from focusfuse.frames.refs import frame_refs

    frames, _ = breathing_stack
    default = write_aligned_frames(frames[:3], tmp_path / "a", mode="translation")
    limited = write_aligned_frames(frames[:3], tmp_path / "b", mode="translation", memory_limit="1G", workers=2)
    assert len(default["aligned"]) == len(limited["aligned"]) == 3
    for first, second in zip(default["aligned"], limited["aligned"]):
        assert np.array_equal(read_image(first), read_image(second))
    with opened_frames(frame_refs(frames[:3])) as opened:
        assert frames_in_flight(opened, 8, None) >= 1
        assert frames_in_flight(opened, 1, None) == 1  # never more frames in flight than workers


def test_align_only_refuses_frames_that_would_share_a_file_name(tmp_path):
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / "x.png", np.round(textured(20, 24, 1) * 255).astype(np.uint8))
    write_image(tmp_path / "d1" / "y.png", np.round(textured(20, 24, 2) * 255).astype(np.uint8))
    r = CliRunner().invoke(main, ["stack", str(tmp_path / "d1" / "x.png"), str(tmp_path / "d2" / "x.png"),
                                  str(tmp_path / "d1" / "y.png"), "--align-only", str(tmp_path / "new")])
    assert r.exit_code == 2 and "would be written as the same file" in r.stderr and "x.png" in r.stderr
    assert not (tmp_path / "new").exists()


def test_cli_carries_exif_and_icc_of_the_reference_frame(weights_file, tmp_path):
    from PIL import Image

    folder = tmp_path / "jpegs"
    folder.mkdir()
    icc = b"\x00" * 128  # minimal blob; the writer validates the header
    try:
        from PIL import ImageCms

        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    except Exception:
        pass
    for i in range(3):
        pil = Image.fromarray(np.round(textured(40, 48, i, 3) * 255).astype(np.uint8))
        exif = pil.getexif()
        exif[0x010F] = "FocusCam"  # Make
        exif[0x0110] = f"Model {i}"
        pil.save(folder / f"shot{i}.jpg", exif=exif, icc_profile=icc, quality=95)
    for suffix in (".jpg", ".png", ".tif"):
        out = tmp_path / f"fused{suffix}"
        r = CliRunner().invoke(main, ["stack", str(folder), "-o", str(out), "--align", "none", "-q",
                                      "--weights", str(weights_file), "--device", "cpu"])
        assert r.exit_code == 0, r.output
        with Image.open(out) as im:
            exif = im.getexif()
            assert exif.get(0x010F) == "FocusCam" and exif.get(0x0110) == "Model 1"  # the middle frame's
            assert im.info.get("icc_profile") == icc


def test_write_errors_name_the_output_not_its_temporary_file(tmp_path, weights_file, monkeypatch):
    import errno
    import os

    import focusfuse.io.images as io_module

    a = write_image(tmp_path / "a.png", np.round(textured(20, 24, 1, 3) * 255).astype(np.uint8))
    b = write_image(tmp_path / "b.png", np.round(textured(20, 24, 2, 3) * 255).astype(np.uint8))

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

    monkeypatch.setattr(io_module.os, "replace", disk_full)
    out = tmp_path / "fused.png"
    r = CliRunner().invoke(main, ["pair", str(a), str(b), "-o", str(out), "--weights", str(weights_file)])
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [f"focusfuse: error: {out}: cannot write (No space left on device)"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.name.startswith("fused")]
