"""The cluster options without a cluster: checked before any work, and one clear line where Dask is missing
(these run whether or not the dask extra is installed)."""

import sys

import pytest
from click.testing import CliRunner

from focusfuse.cli import main
from focusfuse.engine.options import FusionOptions
from focusfuse.jobs.batch import run_batch
from focusfuse.jobs.stack_job import StackJob
from focusfuse.io.images import write_image

from conftest import textured

import numpy as np
from pathlib import Path


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "stacks"
    for k in range(2):
        folder = root / f"s{k}"
        folder.mkdir(parents=True)
        for i in range(2):
            write_image(folder / f"z{i}.png", np.round(textured(24, 32, i + k, 3) * 255).astype(np.uint8))
    return root


def _template() -> StackJob:
    return StackJob(inputs=[], output=Path(), options=FusionOptions(align="none"))


@pytest.mark.parametrize("extra, message", [
    (["--dask-workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
    (["--dask-workers", "0"], "at least 1"),
])
def test_cluster_options_are_checked_before_any_work(root, tmp_path, extra, message):
    r = CliRunner().invoke(main, ["batch", str(root), "-o", str(tmp_path / "out"), *extra])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_without_dask_the_options_give_one_clear_line(root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    for command in (["batch", str(root), "-o", str(tmp_path / "out")],
                    ["stack", str(root / "s0"), "-o", str(tmp_path / "f.tif")]):
        r = CliRunner().invoke(main, [*command, "--dask-workers", "2"])
        assert r.exit_code == 2 and "focusfuse[dask]" in r.output and len(r.output.strip().splitlines()) == 1
    with pytest.raises(Exception, match=r"focusfuse\[dask\]"):
        run_batch(root, tmp_path / "out", _template(), None, client=object())


def test_the_default_cli_needs_no_dask(root, tmp_path, weights_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    r = CliRunner().invoke(main, ["batch", str(root), "-o", str(tmp_path / "out"), "--align", "none", "--weights",
                                  str(weights_file), "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == ["s0.tif", "s1.tif"]


def test_a_client_that_is_not_a_dask_client_is_refused_before_any_work(root, tmp_path, model):
    pytest.importorskip("distributed", reason="needs the dask extra")
    from focusfuse import fuse_stack
    from focusfuse.errors import UsageError

    with pytest.raises(UsageError, match="dask.distributed Client") as err:
        run_batch(root, tmp_path / "out", _template(), model, client="tcp://127.0.0.1:8786")
    assert err.value.option == "client" and not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="dask.distributed Client"):
        fuse_stack(sorted((root / "s0").glob("*.png")), weights=model, client=object())
