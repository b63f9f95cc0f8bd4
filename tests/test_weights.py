import datetime

import pytest
import torch

from focusfuse.errors import WeightsError
from focusfuse.methods.gacn.model import GACN
from focusfuse.methods.gacn.weights import (focusfuse_to_official, load_model, read_weights, resolve_weights, save_weights,
                               user_weights_dir)

from conftest import random_model


def test_save_and_load_keep_weights_and_metadata(tmp_path):
    model = random_model(3)
    path = save_weights(model, tmp_path / "w.pt", {"training_data": "bsds300", "epochs": 2})
    loaded = load_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert loaded.metadata["training_data"] == "bsds300" and "created" in loaded.metadata
    assert loaded.source == str(path)
    assert not loaded.training
    assert not list(tmp_path.glob(".*tmp"))


def test_official_layout_file_loads(tmp_path):
    model = random_model(4)
    path = tmp_path / "GACN.pkl"
    torch.save(focusfuse_to_official(model.state_dict()), path)
    loaded = load_model(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert "official" in loaded.metadata["source"]


def test_bad_weights_files_are_reported(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read weights .*: not a PyTorch file$"):
        read_weights(tmp_path / "junk.pt")
    torch.save({"w": torch.zeros(3)}, tmp_path / "cut_short.pt")
    (tmp_path / "cut_short.pt").write_bytes((tmp_path / "cut_short.pt").read_bytes()[:200])
    with pytest.raises(WeightsError, match="truncated or corrupt$"):
        read_weights(tmp_path / "cut_short.pt")
    torch.save({"w": torch.zeros(3), "made": datetime.date(2026, 1, 1)}, tmp_path / "objects.pt")
    with pytest.raises(WeightsError, match="tensors only") as caught:
        read_weights(tmp_path / "objects.pt")
    assert "weights_only" not in str(caught.value)  # never the advice to unpickle an untrusted file
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="neither"):
        read_weights(tmp_path / "other.pt")
    state = GACN().state_dict()
    state.pop("decision.sse_in.conv.weight")
    torch.save({"format": "focusfuse-weights", "architecture": "gacn-v1", "state_dict": state}, tmp_path / "cut.pt")
    with pytest.raises(WeightsError, match="do not fit"):
        load_model(tmp_path / "cut.pt")
    torch.save({"format": "focusfuse-weights", "architecture": "gacn-v9", "state_dict": state}, tmp_path / "v9.pt")
    with pytest.raises(WeightsError, match="gacn-v9"):
        load_model(tmp_path / "v9.pt")


def test_installed_names_resolve_from_the_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    target = save_weights(random_model(), user_weights_dir() / "microscope.pt")
    assert resolve_weights("microscope") == target
    assert resolve_weights("microscope.pt") == target
    with pytest.raises(WeightsError, match="no such file"):
        resolve_weights("other")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "microscope").mkdir()  # the training run's folder, named like its installed weights
    assert resolve_weights("microscope") == target
    (tmp_path / "run").mkdir()
    with pytest.raises(WeightsError, match="not a file"):
        resolve_weights("run")


def test_no_default_weights_gives_a_clear_error(tmp_path, monkeypatch):
    import focusfuse.methods.gacn.weights as fw

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setattr(fw, "packaged_weights_dirs", lambda: [tmp_path / "empty"])
    with pytest.raises(WeightsError, match="no default weights"):
        resolve_weights(None)


def test_default_weights_are_found_in_the_package_dir(tmp_path, monkeypatch):
    import focusfuse.methods.gacn.weights as fw

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(fw, "packaged_weights_dirs", lambda: [tmp_path / "pkg"])
    path = save_weights(random_model(), tmp_path / "pkg" / f"{fw.DEFAULT_WEIGHTS_NAME}.pt")
    assert resolve_weights(None) == path


def test_shipped_default_weights_load_and_pick_the_sharp_frame():
    # the weights committed in weights/ (trained by focusfuse train, docs/model-card.md)
    import cv2
    import numpy as np

    from focusfuse import fuse_pair

    path = resolve_weights(None)
    _, metadata = read_weights(path)
    assert metadata.get("training_data") and metadata.get("epoch")
    rng = np.random.default_rng(0)
    sharp = cv2.resize(rng.random((24, 32)).astype(np.float32), (128, 96), interpolation=cv2.INTER_CUBIC)
    sharp = np.clip((sharp + 0.3 * rng.random((96, 128)).astype(np.float32)) / 1.3, 0, 1)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    left = np.zeros((96, 128), bool)
    left[:, :64] = True
    a = np.where(left, sharp, blurred)  # A sharp on the left half, B on the right
    b = np.where(left, blurred, sharp)
    dm = fuse_pair(a, b, weights=str(path), device="cpu").decision_map
    assert (dm[:, 8:56] > 0.5).mean() > 0.95 and (dm[:, 72:120] < 0.5).mean() > 0.95
