"""Model weights: the official GACN checkpoint layout, our own format, and where weights are found.

Our format is a torch file holding ``{"format": "focusfuse-weights", "format_version": 1,
"architecture": "gacn-v1", "state_dict": {...}, "metadata": {...}}``; the official checkpoint is a bare
state dict with the authors' key names, which we translate. Both load with ``weights_only=True``.

``--weights`` takes a file path or the name of weights installed in the user data directory
(``focusfuse train`` puts them there) or shipped with the package. Without it the package's default
weights are used, if they are installed.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...errors import WeightsError
from .model import ARCHITECTURE, GACN

FORMAT = "focusfuse-weights"
FORMAT_VERSION = 1
DEFAULT_WEIGHTS_NAME = "focusfuse-gacn"
WEIGHTS_SUFFIXES = (".pt", ".pth", ".pkl")

_OFFICIAL_BLOCK = re.compile(r"^(feature_extraction_conv|decision_path_conv)(\d)\.\1\2_(Conv2d|BatchNorm)\.(.+)$")
_OFFICIAL_SE = re.compile(r"^se_(\d)\.fc\.(0|2)\.weight$")


def official_key_to_ours(key: str) -> str:
    """One authors' key (``feature_extraction_conv0.feature_extraction_conv0_Conv2d.weight``) -> ours."""
    if m := _OFFICIAL_BLOCK.match(key):
        path, index, layer, param = m.groups()
        part = "conv" if layer == "Conv2d" else "bn"
        if path == "feature_extraction_conv":
            return f"features.blocks.{int(index)}.{part}.{param}"
        return f"decision.blocks.{int(index) - 1}.{part}.{param}"
    if m := _OFFICIAL_SE.match(key):
        index, fc = int(m.group(1)), m.group(2)
        if index <= 3:
            return f"features.cse.{index}.{'squeeze' if fc == '0' else 'excite'}.weight"
        if index == 4:
            return "decision.sse_in.conv.weight"
        return f"decision.sse.{index - 5}.conv.weight"
    raise WeightsError(f"unexpected key {key!r} in an official-layout GACN checkpoint")


def official_keys() -> list[str]:
    """All keys of the authors' checkpoint layout."""
    keys = []
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    for prefix, indices in (("feature_extraction_conv", range(4)), ("decision_path_conv", range(1, 5))):
        for i in indices:
            keys += [f"{prefix}{i}.{prefix}{i}_Conv2d.{p}" for p in ("weight", "bias")]
            keys += [f"{prefix}{i}.{prefix}{i}_BatchNorm.{p}" for p in bn]
    for i in range(9):
        keys.append(f"se_{i}.fc.0.weight")
        if i <= 3:
            keys.append(f"se_{i}.fc.2.weight")
    return keys


def official_to_focusfuse(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Translate an official-layout state dict to our module names."""
    return {official_key_to_ours(k): v for k, v in state.items()}


def focusfuse_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`official_to_focusfuse` (to use our weights with the authors' code)."""
    ours_to_official = {official_key_to_ours(k): k for k in official_keys()}
    return {ours_to_official[k]: v for k, v in state.items()}


def is_official_layout(state: Mapping[str, Any]) -> bool:
    return any(k.startswith("feature_extraction_conv0.") for k in state)


def weights_file_payload(model: torch.nn.Module, metadata: Mapping[str, Any] | None = None,
                         architecture: str = ARCHITECTURE) -> dict[str, Any]:
    """The dict saved by :func:`save_weights`."""
    meta = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    meta.update(metadata or {})
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": architecture,
            "state_dict": state, "metadata": meta}


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None,
                 architecture: str = ARCHITECTURE) -> Path:
    """Save weights in our format (atomically: temporary file, then rename); ``architecture`` names the network
    (GACN's by default)."""
    from ...io.images import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: torch.save(weights_file_payload(model, metadata, architecture), tmp))


def load_problem(path: Path, exc: Exception) -> str:
    """What went wrong in ``torch.load``, in a few words (torch's own text runs to a paragraph, and
    suggests loading untrusted pickles)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError as err:
        return err.strerror or str(err)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
        return "not a PyTorch file"
    text = str(exc)
    if "Weights only load failed" in text:
        return "it holds Python objects besides tensors (focusfuse loads tensors only, for safety)"
    if "zip archive" in text or "corrupt" in text or isinstance(exc, EOFError):
        return "truncated or corrupt"
    first = text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
    return first.split(". ")[0]


def load_payload(path: Path, title: str, option: str | None = None) -> Mapping[str, Any]:
    """The contents of a weights file (tensors only), refused unless readable and a mapping (errors name
    ``option``)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise WeightsError(f"cannot read weights file {path}: {load_problem(path, exc)}", option=option) from exc
    if not isinstance(payload, Mapping):
        raise WeightsError(f"{path} is not a {title} weights file", option=option)
    return payload


def our_format_state(payload: Mapping[str, Any], path: Path, architecture: str, title: str,
                     option: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state dict, metadata) of a file in our format holding ``architecture`` (None: another layout)."""
    if payload.get("format") != FORMAT:
        return None
    if payload.get("architecture") != architecture:
        raise WeightsError(f"{path} holds architecture {payload.get('architecture')!r}, {title} needs "
                           f"{architecture!r}", option=option)
    return dict(payload["state_dict"]), dict(payload.get("metadata", {}))


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a weights file of either layout -> (our state dict, metadata)."""
    path = Path(path)
    payload = load_payload(path, "GACN")
    if (state := our_format_state(payload, path, ARCHITECTURE, "GACN")) is not None:
        return state
    if is_official_layout(payload):
        return official_to_focusfuse(payload), {"source": "official GACN checkpoint layout"}
    if isinstance(payload.get("model"), Mapping) and "optimizer" in payload:  # a run's last.pt (focusfuse train)
        epoch = payload.get("epoch")  # 0-based in the checkpoint, 1-based in the run's log
        return dict(payload["model"]), {"source": "training checkpoint", "config": payload.get("config", {}),
                                        "epoch": epoch + 1 if isinstance(epoch, int) else None}
    raise WeightsError(f"{path} is neither a focusfuse weights file nor an official GACN checkpoint")


def user_weights_dir() -> Path:
    """Where ``focusfuse train`` installs weights (platformdirs user data dir; when focusfuse runs from its
    sources without platformdirs, the XDG data dir)."""
    try:
        import platformdirs
    except ImportError:
        data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(data) / "focusfuse" / "weights"
    return Path(platformdirs.user_data_dir("focusfuse", appauthor=False)) / "weights"


def packaged_weights_dirs() -> list[Path]:
    """The wheel's ``focusfuse/weights`` and, in a source checkout, the top-level ``weights/``."""
    package = Path(__file__).resolve().parents[2]  # focusfuse/ (this file is focusfuse/methods/gacn/weights.py)
    return [package / "weights", package.parents[1] / "weights"]


def _candidates(name: str, dirs: list[Path]) -> list[Path]:
    names = [name] + [name + s for s in WEIGHTS_SUFFIXES if not name.endswith(s)]
    return [d / n for d in dirs for n in names]


def resolve_weights(weights: str | os.PathLike | None, default_name: str = DEFAULT_WEIGHTS_NAME,
                    official: str = "the official GACN.pkl checkpoint") -> Path:
    """File path for ``--weights`` (a path, or a name installed by ``focusfuse train`` or shipped with the
    package) or, without it, the default weights ``default_name`` shipped with the package."""
    if weights is None:
        for path in _candidates(default_name, packaged_weights_dirs()):
            if path.is_file():
                return path
        raise WeightsError(f"no default weights are installed; give weights: a focusfuse weights file, or "
                           f"{official}", option="weights")
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if len(path.parts) == 1:  # a name; a folder of that name here (say, the training run's) does not hide it
        for candidate in _candidates(str(weights), [user_weights_dir(), *packaged_weights_dirs()]):
            if candidate.is_file():
                return candidate
    if path.exists():
        raise WeightsError(f"weights {weights}: not a file", option="weights")
    raise WeightsError(f"weights {weights}: no such file or installed weights name "
                       f"(installed weights live in {user_weights_dir()})", option="weights")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(weights: str | os.PathLike | GACN | None = None,
               device: torch.device | str = "cpu") -> GACN:
    """A GACN in eval mode on ``device`` from a path, an installed name, the default, or a model."""
    if isinstance(weights, torch.nn.Module) and not isinstance(weights, GACN):
        raise WeightsError(f"{type(weights).__name__} weights given to the GACN method", option="weights")
    if isinstance(weights, GACN):
        ready = not weights.training and weights.device == torch.device(device) and all(
            p.is_contiguous(memory_format=torch.channels_last) for p in weights.parameters() if p.ndim == 4)
        if ready:
            return weights
        model = copy.deepcopy(weights)  # the caller's model keeps its mode, device and layout
        return model.to(device, memory_format=torch.channels_last).eval()
    path = resolve_weights(weights)
    state, metadata = read_weights(path)
    model = fitted(GACN(), state, metadata, path, "GACN")
    return model.to(device, memory_format=torch.channels_last).eval()  # NHWC: faster convolutions


def fitted(model: torch.nn.Module, state: Mapping[str, torch.Tensor], metadata: dict[str, Any], path: Path,
           architecture: str) -> Any:
    """``model`` with ``state`` loaded (strictly) and its source recorded; a clear error if they do not fit."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not fit the {architecture} architecture "
                           f"({str(exc).splitlines()[0]})", option="weights") from exc
    model.source = str(path)
    model.metadata = metadata
    return model
