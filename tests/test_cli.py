import numpy as np
import pytest
from click.testing import CliRunner

from focusfuse.cli import main
from focusfuse.io.images import read_image, write_image

from conftest import textured


def _runner():
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart by default
        return CliRunner()


@pytest.fixture
def pair_files(tmp_path):
    a = write_image(tmp_path / "a.png", np.round(textured(20, 24, 1, 3) * 255).astype(np.uint8))
    b = write_image(tmp_path / "b.png", np.round(textured(20, 24, 2, 3) * 255).astype(np.uint8))
    return a, b


@pytest.fixture
def stack_dir(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (1, 2, 10):
        write_image(folder / f"img{i}.png", np.round(textured(20, 24, i) * 65535).astype(np.uint16))
    return folder


def test_pair_writes_fused_and_decision_map(pair_files, weights_file, tmp_path):
    a, b = pair_files
    out, dm = tmp_path / "fused.png", tmp_path / "dm.png"
    r = _runner().invoke(main, ["pair", str(a), str(b), "-o", str(out), "--decision-map", str(dm),
                                "--weights", str(weights_file), "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    assert read_image(out).shape == (20, 24, 3)
    dm_image = read_image(dm)
    assert dm_image.dtype == np.uint16 and dm_image.shape == (20, 24)
    assert "fused 24x20 pair" in r.stderr


def test_existing_output_is_refused_without_overwrite(pair_files, weights_file, tmp_path):
    a, b = pair_files
    out = write_image(tmp_path / "fused.png", np.zeros((2, 2), np.uint8))
    args = ["pair", str(a), str(b), "-o", str(out), "--weights", str(weights_file), "--device", "cpu", "-q"]
    r = _runner().invoke(main, args)
    assert r.exit_code == 2
    assert r.stderr.strip().count("\n") == 0 and "exists" in r.stderr and "--overwrite" in r.stderr
    assert read_image(out).shape == (2, 2)  # untouched
    r = _runner().invoke(main, args + ["--overwrite"])
    assert r.exit_code == 0 and read_image(out).shape == (20, 24, 3)


def test_output_equal_to_input_is_refused(pair_files, weights_file):
    a, b = pair_files
    before = a.read_bytes()
    r = _runner().invoke(main, ["pair", str(a), str(b), "-o", str(a), "--overwrite", "--weights", str(weights_file)])
    assert r.exit_code == 2 and "overwrite an input" in r.stderr
    assert a.read_bytes() == before


def test_stack_writes_fused_and_index_map(stack_dir, weights_file, tmp_path):
    out, index = tmp_path / "out.tif", tmp_path / "index.png"
    r = _runner().invoke(main, ["stack", str(stack_dir), "-o", str(out), "--index-map", str(index),
                                "--weights", str(weights_file), "--device", "cpu", "--strategy", "serial", "--align", "none"])
    assert r.exit_code == 0, r.stderr
    fused = read_image(out)
    assert fused.dtype == np.uint16 and fused.shape == (20, 24)
    assert read_image(index).max() <= 2
    assert "fused 3 frames" in r.stderr


def test_missing_default_weights_explain_what_to_do(stack_dir, tmp_path, monkeypatch):
    import focusfuse.methods.gacn.weights as fw

    monkeypatch.setattr(fw, "packaged_weights_dirs", lambda: [tmp_path / "none"])
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    r = _runner().invoke(main, ["stack", str(stack_dir), "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 2
    assert "no default weights are installed" in r.stderr and "--weights" in r.stderr


def test_demo_runs_and_reports_psnr(weights_file, tmp_path):
    out = tmp_path / "demo"
    r = _runner().invoke(main, ["demo", "--weights", str(weights_file), "--frames", "3", "--scale", "0.2",
                                "-o", str(out), "-q", "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    assert "PSNR" in r.stdout
    assert (out / "fused.png").exists() and len(list((out / "frames").glob("*.png"))) == 3
    assert read_image(out / "truth.png").shape == read_image(out / "fused.png").shape


def test_version():
    r = _runner().invoke(main, ["--version"])
    assert r.exit_code == 0 and "focusfuse" in r.stdout


def test_evaluate_reproduces_reference_values(tmp_path):
    """The CLI on two of the official results gives the reference code's values (needs ../shared)."""
    import json
    import shutil

    from conftest import need_shared

    values = json.loads(need_shared("reference", "metrics", "values.json").read_text())
    shared = need_shared()
    sources, fused = tmp_path / "sources", tmp_path / "fused"
    sources.mkdir()
    fused.mkdir()
    chosen = [v for v in values if "gacn_official" in v["fused"]][:2]
    for v in chosen:
        shutil.copy(shared / v["a"], sources)
        shutil.copy(shared / v["b"], sources)
        shutil.copy(shared / v["fused"], fused)
    out = tmp_path / "m.json"
    r = _runner().invoke(main, ["evaluate", str(sources), str(fused), "--suffix", "_fused", "--json", str(out), "-q"])
    assert r.exit_code == 0, r.stderr
    cases = {c["name"]: c for c in json.loads(out.read_text())["cases"]}
    for v in chosen:
        name = v["a"].split("/")[-1][: -len("_1.png")]
        for key in ("Qg", "Qy", "Qcb", "Qncie", "FMI_edge", "FMI_dct"):
            assert abs(cases[name][key] - v[key]) < 1e-4
    assert "mean" in r.stdout


def test_evaluate_reports_missing_fused_images(tmp_path):
    sources, fused = tmp_path / "s", tmp_path / "f"
    sources.mkdir()
    fused.mkdir()
    for i in (1, 2):
        write_image(sources / f"x_{i}.png", np.zeros((8, 8), np.uint8))
    r = _runner().invoke(main, ["evaluate", str(sources), str(fused)])
    assert r.exit_code == 2 and "missing fused image" in r.stderr and "Traceback" not in r.stderr


def test_edge_fill_option(tmp_path, weights_file):
    a = np.round(textured(20, 24, 1, 3) * 255).astype(np.uint8)
    b = np.round(textured(20, 24, 2, 3) * 255).astype(np.uint8)
    b[:, -3:] = 0  # registration fill along B's right edge
    pa, pb = write_image(tmp_path / "a.png", a), write_image(tmp_path / "b.png", b)
    fused = {}
    for flag in ("--edge-fill", "--no-edge-fill"):
        out = tmp_path / f"fused{flag}.png"
        r = _runner().invoke(main, ["pair", str(pa), str(pb), "-o", str(out), "--weights", str(weights_file),
                                    "--device", "cpu", "-q", flag])
        assert r.exit_code == 0, r.stderr
        fused[flag] = read_image(out)
    assert np.array_equal(fused["--edge-fill"][:, -3:], a[:, -3:])  # the fill is never taken from B
    assert not np.array_equal(fused["--no-edge-fill"][:, -3:], a[:, -3:])  # the random weights pick B


def _evaluate_folders(tmp_path):
    sources, fused = tmp_path / "s", tmp_path / "f"
    sources.mkdir()
    fused.mkdir()
    for i in (1, 2):
        write_image(sources / f"x_{i}.png", np.round(textured(16, 16, i) * 255).astype(np.uint8))
    write_image(fused / "x.png", np.round(textured(16, 16, 3) * 255).astype(np.uint8))
    return sources, fused


@pytest.mark.parametrize("report,message", [
    ("s/x_1.png", "would overwrite an input"),
    ("f/x.png", "would overwrite an input"),
    ("exists.json", "exists (allow overwriting to replace it) (--overwrite)"),
    ("s", "is a folder"),
    ("missing/m.json", "does not exist"),
])
def test_evaluate_refuses_reports_that_would_replace_files_before_measuring(tmp_path, report, message):
    sources, fused = _evaluate_folders(tmp_path)
    (tmp_path / "exists.json").write_text("precious")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    r = _runner().invoke(main, ["evaluate", str(sources), str(fused), "--json", str(tmp_path / report)])
    assert r.exit_code == 2 and r.stderr.splitlines() == [r.stderr.strip()] and message in r.stderr, r.stderr
    assert r.stdout == ""  # refused before any metric was computed
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_evaluate_json_and_csv_must_differ_and_overwrite_replaces(tmp_path):
    sources, fused = _evaluate_folders(tmp_path)
    same = tmp_path / "m.out"
    r = _runner().invoke(main, ["evaluate", str(sources), str(fused), "--json", str(same), "--csv", str(same)])
    assert r.exit_code == 2 and "two outputs name the same file" in r.stderr and not same.exists()
    (tmp_path / "m.json").write_text("old")
    r = _runner().invoke(main, ["evaluate", str(sources), str(fused), "--json", str(tmp_path / "m.json"),
                                "--overwrite", "-q"])
    assert r.exit_code == 0, r.stderr
    assert '"cases"' in (tmp_path / "m.json").read_text()


def test_a_frame_given_twice_is_refused(stack_dir, weights_file, tmp_path):
    r = _runner().invoke(main, ["stack", str(stack_dir), str(stack_dir / "img2.png"), "-o", str(tmp_path / "o.png"),
                                "--weights", str(weights_file), "--align", "none"])
    assert r.exit_code == 2 and r.stderr.splitlines() == [
        f"focusfuse: error: {stack_dir / 'img2.png'}: the same frame is given twice"]


def test_option_errors_are_one_line_naming_the_help(pair_files, tmp_path):
    a, b = pair_files
    r = _runner().invoke(main, ["pair", str(a), str(b), "-o", str(tmp_path / "o.png"), "--reduce", "x"],
                         prog_name="focusfuse")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["focusfuse: error: Invalid value for '--reduce': 'x' is not a valid integer. "
                                     "(see 'focusfuse pair --help')"]
    # values out of range are the library's to refuse (checked once, in plain words, before any work)
    r = _runner().invoke(main, ["pair", str(a), str(b), "-o", str(tmp_path / "o.png"), "--reduce", "99"],
                         prog_name="focusfuse")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["focusfuse: error: reduce must be an integer from 1 to 8, not 99 (--reduce)"]


def test_demo_refuses_a_file_as_its_folder_and_clears_stale_frames(weights_file, tmp_path):
    (tmp_path / "file").write_text("x")
    r = _runner().invoke(main, ["demo", "--weights", str(weights_file), "-o", str(tmp_path / "file"), "-q"])
    assert r.exit_code == 2 and r.stderr.splitlines() == [f"focusfuse: error: {tmp_path / 'file'}: is a file, not a folder"]
    out = tmp_path / "demo"
    (out / "frames").mkdir(parents=True)
    (out / "frames" / "frame_07.png").write_bytes(b"from an earlier demo with 7 frames")
    r = _runner().invoke(main, ["demo", "--weights", str(weights_file), "--frames", "3", "--scale", "0.2",
                                "-o", str(out), "-q", "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["frame_01.png", "frame_02.png", "frame_03.png"]


def test_files_in_shell_glob_order_fuse_as_the_folder_does(stack_dir, good_model, tmp_path):
    def index_map(*inputs, name):
        index = tmp_path / f"{name}.png"
        r = _runner().invoke(main, ["stack", *map(str, inputs), "-o", str(tmp_path / f"{name}.tif"), "--index-map",
                                    str(index), "--weights", str(good_model.source), "--align", "none", "-q"])
        assert r.exit_code == 0, r.stderr
        return read_image(index)

    folder = index_map(stack_dir, name="folder")
    assert set(np.unique(folder)) == {0, 1, 2}  # every frame is chosen somewhere, so the order shows
    glob_order = [stack_dir / name for name in ("img1.png", "img10.png", "img2.png")]
    assert np.array_equal(index_map(*glob_order, name="files"), folder)


@pytest.mark.parametrize("kwargs,message", [({"n_frames": 1}, "number of frames"), ({"scale": 5}, "scale 5"),
                                            ({"scale": 0}, "scale 0")])
def test_the_demo_checks_its_options_in_the_library(tmp_path, kwargs, message):
    from focusfuse import UsageError, run_demo

    with pytest.raises(UsageError, match=message):
        run_demo(out_dir=tmp_path / "demo", **kwargs)
    assert not (tmp_path / "demo").exists()


def test_a_library_option_named_otherwise_on_the_command_line_points_at_its_flag():
    result = CliRunner().invoke(main, ["demo", "--frames", "1"])
    assert result.exit_code == 2 and result.output.strip().endswith("(--frames)")


def test_sigterm_ends_a_command_like_an_interrupt_with_its_clean_up(tmp_path, monkeypatch):
    import os
    import signal
    import time

    import focusfuse.jobs.pair_job as pair_job

    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, np.zeros((32, 32), np.uint8))
    partial = tmp_path / ".out.partial.png"

    def interrupted_run(*args, **kwargs):
        partial.write_bytes(b"half")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises in here
        finally:
            partial.unlink()

    def ignore(signum, frame):  # without the command's own handler, SIGTERM must not end the test run
        pass

    monkeypatch.setattr(pair_job, "run_pair", interrupted_run)
    previous = signal.signal(signal.SIGTERM, ignore)
    try:
        result = CliRunner().invoke(main, ["pair", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                           "-o", str(tmp_path / "out.png"), "-q"])
        restored = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 143 and "focusfuse: terminated" in result.output
    assert not partial.exists() and restored is ignore
