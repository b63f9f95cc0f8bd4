"""focusfuse batch: many stacks, a broken one reported, --resume re-runs only what changed."""

import json
import os
import shutil

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from focusfuse.jobs.batch import discover_stacks, inputs_hash
from focusfuse.cli import main
from focusfuse.errors import UsageError
from focusfuse.io.images import read_image, write_image

from conftest import textured


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "stacks"
    for name in ("alpha", "beta"):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(3):
            write_image(folder / f"z{i}.png", np.round(textured(20, 24, i + len(name), 3) * 255).astype(np.uint8))
    broken = root / "broken"
    broken.mkdir()
    write_image(broken / "z0.png", np.zeros((20, 24, 3), np.uint8))
    (broken / "z1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    tifffile.imwrite(root / "gamma.tif", np.round(np.stack([textured(20, 24, s) for s in (7, 8, 9)]) * 65535).astype(np.uint16),
                     photometric="minisblack")
    return root


def _batch(root, out, weights_file, *extra):
    return CliRunner().invoke(main, ["batch", str(root), "-o", str(out), "--align", "none", "--weights",
                                     str(weights_file), "--device", "cpu", "-q", *extra])


def test_discovers_folders_and_multipage_tiffs(root):
    assert [s.name for s in discover_stacks(root)] == ["alpha", "beta", "broken", "gamma"]


def test_a_broken_stack_is_reported_and_the_others_finish(root, tmp_path, weights_file):
    out = tmp_path / "out"
    r = _batch(root, out, weights_file)
    assert r.exit_code == 1
    report = json.loads((out / "batch-report.json").read_text())
    status = {s["name"]: s["status"] for s in report["stacks"]}
    assert status == {"alpha": "ok", "beta": "ok", "broken": "failed", "gamma": "ok"}
    assert (report["ok"], report["failed"]) == (3, 1)
    assert read_image(out / "gamma.tif").dtype == np.uint16
    assert not (out / "broken.tif").exists()
    failed = json.loads((out / "broken.json").read_text())
    assert "z1.png" in failed["error"] and failed["status"] == "failed"
    alpha = json.loads((out / "alpha.json").read_text())
    for key in ("frames_used", "width", "height", "device", "seconds", "peak_rss_mb", "strategy",
                "weights_sha256", "inputs_hash", "params_hash"):
        assert key in alpha


def test_resume_reruns_only_changed_stacks(root, tmp_path, weights_file):
    out = tmp_path / "out"
    _batch(root, out, weights_file)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    # change one input of beta (new content, new mtime)
    target = root / "beta" / "z1.png"
    write_image(target, np.round(textured(20, 24, 99, 3) * 255).astype(np.uint8), )
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    r = _batch(root, out, weights_file, "--resume")
    report = json.loads((out / "batch-report.json").read_text())
    status = {s["name"]: s["status"] for s in report["stacks"]}
    assert status == {"alpha": "skipped", "beta": "ok", "broken": "failed", "gamma": "skipped"}
    assert r.exit_code == 1  # the broken stack still fails
    assert (out / "alpha.tif").stat().st_mtime_ns == before["alpha.tif"]
    assert (out / "beta.tif").stat().st_mtime_ns != before["beta.tif"]


def test_resume_reruns_when_parameters_change(root, tmp_path, weights_file):
    out = tmp_path / "out"
    _batch(root, out, weights_file)
    _batch(root, out, weights_file, "--resume", "--strategy", "serial")
    report = json.loads((out / "batch-report.json").read_text())
    assert {s["name"]: s["status"] for s in report["stacks"]}["alpha"] == "ok"
    _batch(root, out, weights_file, "--resume", "--strategy", "serial", "--reduce", "2")
    report = json.loads((out / "batch-report.json").read_text())
    assert {s["name"]: s["status"] for s in report["stacks"]}["alpha"] == "ok"  # --reduce is a parameter too
    _batch(root, out, weights_file, "--resume", "--strategy", "serial", "--reduce", "2")
    report = json.loads((out / "batch-report.json").read_text())
    assert {s["name"]: s["status"] for s in report["stacks"]}["alpha"] == "skipped"


def test_without_resume_existing_outputs_are_refused_per_stack(root, tmp_path, weights_file):
    out = tmp_path / "out"
    _batch(root, out, weights_file)
    _batch(root, out, weights_file)
    report = json.loads((out / "batch-report.json").read_text())
    alpha = next(s for s in report["stacks"] if s["name"] == "alpha")
    assert alpha["status"] == "failed" and "exists" in alpha["error"]
    assert json.loads((out / "alpha.json").read_text())["status"] == "ok"  # still describes alpha.tif
    resumed = _batch(root, out, weights_file, "--resume")
    status = {s["name"]: s["status"] for s in json.loads((out / "batch-report.json").read_text())["stacks"]}
    assert resumed.exit_code == 1 and status == {"alpha": "skipped", "beta": "skipped", "broken": "failed",
                                                 "gamma": "skipped"}


def test_inputs_hash_tracks_names_sizes_and_times(root):
    first = inputs_hash((root / "alpha",))
    assert first == inputs_hash((root / "alpha",))
    (root / "alpha" / "z3.png").write_bytes((root / "alpha" / "z0.png").read_bytes())
    assert inputs_hash((root / "alpha",)) != first


def test_batch_json_lines(root, tmp_path, weights_file):
    r = _batch(root, tmp_path / "out", weights_file, "--json")
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["failed"] == 1
    assert sum(e["event"] == "stack" and e["status"] == "ok" for e in events) == 3


def test_stacks_that_would_write_the_same_outputs_are_refused(root, tmp_path, weights_file):
    tifffile.imwrite(root / "Alpha.tif", np.zeros((3, 20, 24), np.uint8), photometric="minisblack")
    out = tmp_path / "out"
    r = _batch(root, out, weights_file)
    assert r.exit_code == 2 and r.stderr.splitlines() == [
        "focusfuse: error: alpha/ and Alpha.tif would write the same outputs (names differ in case at most): "
        "rename one"]
    assert not out.exists()


@pytest.mark.parametrize("name,extra,clash", [
    ("alpha_index", ("--index-maps", "--format", "png"), "alpha/ and alpha_index/ would both write alpha_index.png"),
    ("beta_depth", ("--depth-previews", "--format", "png"), "beta/ and beta_depth/ would both write beta_depth.png"),
    ("batch-report", (), "the batch report and batch-report/ would both write batch-report.json"),
    ("Batch-Report", (), "the batch report and Batch-Report/ would both write Batch-Report.json"),
])
def test_stacks_whose_files_land_on_others_are_refused_before_any_work(root, tmp_path, weights_file, name, extra,
                                                                        clash):
    shutil.copytree(root / "alpha", root / name)
    out = tmp_path / "out"
    r = _batch(root, out, weights_file, *extra)
    assert r.exit_code == 2 and r.stderr.splitlines() == [f"focusfuse: error: {clash} in the output folder: rename one"]
    assert not out.exists()


def test_the_library_refuses_clashes_before_loading_weights_and_templates_naming_outputs(root, tmp_path):
    from pathlib import Path

    from focusfuse import FusionOptions, StackJob, batch, run_batch

    shutil.copytree(root / "alpha", root / "batch-report")
    with pytest.raises(UsageError, match="the batch report and batch-report/ would both write batch-report.json"):
        batch(root, tmp_path / "out", weights=str(tmp_path / "missing.pt"))  # the clash is found first
    template = StackJob(inputs=[], output=Path(), options=FusionOptions(align="none"),
                        height_map=tmp_path / "height.tif", z_step=1.0)
    with pytest.raises(UsageError, match=r"a batch names every stack's outputs itself; the template names .*height"):
        run_batch(root, tmp_path / "out2", template, None)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_other_formats_and_maps_keep_such_names_apart(root, tmp_path, weights_file):
    shutil.copytree(root / "alpha", root / "alpha_index")
    r = _batch(root, tmp_path / "out", weights_file, "--index-maps")  # tif images: alpha_index.tif, alpha_index.png
    assert r.exit_code == 1 and (tmp_path / "out" / "alpha_index.tif").exists()
    assert tifffile.imread(tmp_path / "out" / "alpha_index.tif").shape == (20, 24, 3)
    assert read_image(tmp_path / "out" / "alpha_index.png").dtype == np.uint16  # alpha's index map


@pytest.mark.parametrize("where,message", [
    ("root", "must not be ROOT itself"),
    ("inside a stack", "lies inside the stack alpha/"),
    ("a file", "is a file, not a folder"),
    ("a stack folder", "holds images but no batch-report.json"),
])
def test_unusable_output_folders_are_refused_before_any_work(root, tmp_path, weights_file, where, message):
    (tmp_path / "notes.txt").write_text("not a folder")
    out = {"root": root, "inside a stack": root / "alpha" / "fused", "a file": tmp_path / "notes.txt",
           "a stack folder": root / "beta"}[where]
    before = sorted(p for p in tmp_path.rglob("*"))
    r = _batch(root, out, weights_file)
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and message in r.stderr, r.stderr
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, no folder made


def test_batch_from_python_takes_the_cli_options(root, tmp_path, model):
    import focusfuse
    from focusfuse.errors import UsageError

    seen = []
    report = focusfuse.batch(root, tmp_path / "out", weights=model, device="cpu", align="none", index_maps=True,
                             on_stack=lambda status, name, info: seen.append((status, name)))
    assert (report["ok"], report["failed"]) == (3, 1)
    assert ("start", "alpha") in seen and ("ok", "gamma") in seen
    assert (tmp_path / "out" / "alpha_index.png").exists()
    with pytest.raises(UsageError, match="compression"):
        focusfuse.batch(root, tmp_path / "other", weights=model, compression="lzw")
    assert not (tmp_path / "other").exists()
    with pytest.raises(UsageError, match="output format 'gif'"):
        focusfuse.batch(root, tmp_path / "other", weights=model, image_format="gif")
    assert not (tmp_path / "other").exists()


def _float_stacks(root, names=("s0", "s1")):
    """Stacks of float TIFFs whose z0.tif has values above 1 (clipped, with a warning) in every stack."""
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(3):
            scale = 1.5 if i == 0 else 0.9
            tifffile.imwrite(root / name / f"z{i}.tif", (textured(20, 24, i + 3 * k) * scale).astype(np.float32))


def test_each_stack_warns_under_its_own_name_and_records_its_warnings(tmp_path, model):
    import focusfuse

    _float_stacks(tmp_path / "in")
    with pytest.warns(UserWarning) as caught:
        report = focusfuse.batch(tmp_path / "in", tmp_path / "out", weights=model, device="cpu", align="none")
    texts = [str(w.message) for w in caught]
    for name in ("s0", "s1"):  # the same frame name and text in both stacks: raised for each, named by its stack
        assert sum(t.startswith(f"{name}: z0.tif: float pixel values outside [0, 1]") for t in texts) == 1, texts
        entry = next(e for e in report["stacks"] if e["name"] == name)
        assert [w.split(":")[0] for w in entry["warnings"]].count("z0.tif") == 1
        assert not any(w.startswith(("z1.tif", "z2.tif")) for w in entry["warnings"])
        assert json.loads((tmp_path / "out" / f"{name}.json").read_text())["warnings"] == entry["warnings"]


def test_collected_warnings_take_every_thread_and_leave_the_warning_state_as_it_was():
    import threading
    import warnings

    from focusfuse.jobs.stack_warnings import collected_warnings

    hook, filters = warnings.showwarning, list(warnings.filters)
    with collected_warnings() as texts:
        worker = threading.Thread(target=lambda: warnings.warn("from a reading thread"))
        worker.start()
        worker.join()
        warnings.warn("from the stack's thread")
        warnings.warn("from the stack's thread")
        with collected_warnings() as inner:  # a second stack at the same time (several task threads) collects none
            pass
    assert texts == ["from a reading thread", "from the stack's thread"] and inner == []
    assert warnings.showwarning is hook and warnings.filters == filters


def test_collected_warnings_keep_the_callers_filters_and_survive_an_error():
    import warnings

    from focusfuse.jobs.stack_warnings import collected_warnings

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", message="hidden")
        with collected_warnings() as texts:
            warnings.warn("hidden by the caller")
            warnings.warn("shown")
        with collected_warnings() as again:
            warnings.warn("shown")  # a warning the last stack raised too counts for this one
        assert texts == again == ["shown"]
        with pytest.warns(UserWarning, match="before the failure"), pytest.raises(KeyError):
            with collected_warnings():
                warnings.warn("before the failure")
                raise KeyError("failed")
        with collected_warnings() as after:  # the failed block gave the lock back
            warnings.warn("after")
        assert after == ["after"]
