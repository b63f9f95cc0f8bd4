"""Fusion options, validated once when they are made (before any work), with errors in plain words."""

from __future__ import annotations

import math
import operator
import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..methods import DEFAULT_METHOD, METHOD_NAMES
from ..methods.gacn import DEFAULT_STRATEGY, STRATEGY_NAMES
from ..methods.sesf import STRATEGIES as SESF_STRATEGIES

MAX_REDUCE = 8
MIN_TILE_SIZE = 16  # smaller tiles are almost all halo: far slower, no less memory
MIN_MEMORY_LIMIT = 256 << 20
MAX_WORKERS = 64
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def check_int(value: object, name: str, low: int, high: int | None = None, option: str | None = None) -> int:
    """``value`` as an int in [low, high] (numpy integers too; not bools or floats); UsageError otherwise."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise UsageError(f"{name} must be an integer {span}, not {value!r}", option=option or name.replace(" ", "_"))
    return number


def check_reduce(reduce: object) -> int:
    """``reduce`` as an int from 1 to MAX_REDUCE; UsageError otherwise."""
    return check_int(reduce, "reduce", 1, MAX_REDUCE)


def check_boundary_blend(value: object, method: str) -> str:
    """The boundary blend as learned, laplacian, off, or the path of the blend net's weights (None: learned for
    gacn, off for the other methods; True: learned; False: off)."""
    from ..methods.gacn.boundary_blend import BLEND_MODES

    if value is None:
        return "learned" if method == "gacn" else "off"
    if isinstance(value, bool):
        value = "learned" if value else "off"
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise UsageError(f"boundary blend {value!r}: use {', '.join(BLEND_MODES)}, or blend weights (a file or an "
                         "installed name)", option="boundary_blend")
    if method != "gacn" and value != "off":
        raise UsageError(f"the boundary blend applies to the gacn method only (the {method} method has no "
                         "index-map edges to blend)", option="boundary_blend")
    if value in BLEND_MODES:
        return str(value)
    from ..errors import WeightsError
    from ..methods.gacn.weights import resolve_weights

    try:
        return str(resolve_weights(value).resolve())  # absolute: Dask workers load it from the same path
    except WeightsError as exc:
        raise UsageError(f"boundary blend {str(value)!r}: not {', '.join(BLEND_MODES)}, nor blend weights ("
                         f"{str(exc).split(': ', 1)[-1]})", option="boundary_blend") from None


def parse_memory_size(value: int | float | str) -> int:
    """Bytes from an int or a size such as ``4G``, ``512M``, ``1.5GiB`` (binary units; a bare number is bytes)."""
    if isinstance(value, bool):
        raise UsageError(f"memory limit {value!r}: give a size such as 4G or 512M", option="memory_limit")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if match is None:
            raise UsageError(f"memory limit {value!r}: give a size such as 4G or 512M", option="memory_limit")
        number, unit = float(match.group(1)), match.group(2).lower()
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"memory limit {value!r}: give a size such as 4G or 512M", option="memory_limit")
    return int(number * 1024 ** "_kmgt".index(unit or "_"))


@dataclass(frozen=True)
class FusionOptions:
    """How frames are fused, checked once here.

    Parameters
    ----------
    strategy : str or None
        The stack strategy of gacn and sesf: calibrated (running champion; the default), serial, or for
        GACN also calibration (Eq. 18). The wavelet and rpsnn methods have none (None).
    align : str
        auto, none, translation, affine or homography: register every frame onto the reference first.
    crop : bool
        Keep only the area valid in all aligned frames.
    tile_size : int or None
        Tiles of at most this size (0: the image whole; None: chosen from the memory budget).
    reduce : int
        GACN's decision path runs at 1/reduce resolution (a speed option; 1 to 8).
    edge_fill : bool
        Keep constant bands along frame edges out of the decisions (see :mod:`focusfuse.frames.fill`).
    memory_limit : int, str or None
        Most memory a run may use (bytes, or a size such as ``4G``); None: half the free memory, at most
        8 GiB of main memory.
    workers : int or None
        Threads that read, align and prepare frames (None: one per CPU core, at most 8).
    method : str
        gacn (the default), wavelet (a classical pyramid method: no network, no weights), sesf
        (SESF-Fuse: an autoencoder's features decide) or rpsnn (R-PSNN: a network regresses the fused pixels).
    boundary_blend : str, bool or None
        GACN, stacks of three frames or more (pairs: only with blend weights that carry a pair refiner, such as
        the shipped ``focusfuse-blend-pairs``): blend the frames by sharpness near the index map's edges
        (fewer seams and stripes; see :mod:`focusfuse.methods.gacn.boundary_blend`). ``learned`` (the
        default for gacn; also True): weights corrected by the shipped blend network, the band then redrawn
        by its refiner; ``laplacian``: the Laplacian energy's weights alone; ``off`` (also False): GACN's
        hard switch; or the blend
        network's weights trained by ``focusfuse train --method blend`` (a file or an installed name).
        Normalised to one of the three modes or to the weights' path.
    """

    strategy: str | None = None
    align: str = "auto"
    crop: bool = False
    tile_size: int | None = None
    reduce: int = 1
    edge_fill: bool = True
    memory_limit: int | str | None = None
    workers: int | None = None
    method: str = DEFAULT_METHOD
    boundary_blend: str | bool | None = None

    def __post_init__(self) -> None:
        from ..align.estimate import MODES as ALIGN_MODES

        if self.method not in METHOD_NAMES:
            raise UsageError(f"unknown method {self.method!r} (use {', '.join(METHOD_NAMES)})", option="method")
        if self.method in ("wavelet", "rpsnn"):
            if self.strategy is not None:
                raise UsageError(f"strategy applies to the gacn and sesf methods (the {self.method} method fuses "
                                 "every frame the same way)", option="strategy")
        elif self.strategy is None:
            object.__setattr__(self, "strategy", DEFAULT_STRATEGY)
        if self.method == "sesf" and self.strategy not in SESF_STRATEGIES:
            raise UsageError(f"strategy {self.strategy!r} is GACN's; the sesf method takes "
                             f"{' or '.join(SESF_STRATEGIES)}", option="strategy")
        if self.strategy is not None and self.strategy not in STRATEGY_NAMES:
            raise UsageError(f"unknown strategy {self.strategy!r} (use {', '.join(STRATEGY_NAMES)})", option="strategy")
        if self.align not in ALIGN_MODES:
            raise UsageError(f"unknown alignment {self.align!r} (use {', '.join(ALIGN_MODES)})", option="align")
        object.__setattr__(self, "reduce", check_reduce(self.reduce))
        if self.reduce > 1 and self.method != "gacn":
            raise UsageError(f"reduce applies to the gacn method only (the {self.method} method has no decision "
                             "network)", option="reduce")
        object.__setattr__(self, "boundary_blend", check_boundary_blend(self.boundary_blend, self.method))
        if self.tile_size is not None:
            size = check_int(self.tile_size, "tile size", 0)
            if 0 < size < MIN_TILE_SIZE:
                raise UsageError(f"tile size {size}: use 0 (the image whole) or at least {MIN_TILE_SIZE}",
                                 option="tile_size")
            object.__setattr__(self, "tile_size", size)
        if self.memory_limit is not None:
            limit = parse_memory_size(self.memory_limit)
            if limit < MIN_MEMORY_LIMIT:
                raise UsageError(f"memory limit {self.memory_limit!r}: at least {MIN_MEMORY_LIMIT >> 20} MiB",
                                 option="memory_limit")
            object.__setattr__(self, "memory_limit", limit)
        if self.workers is not None:
            object.__setattr__(self, "workers", check_int(self.workers, "workers", 0, MAX_WORKERS))
        for flag in ("crop", "edge_fill"):
            value = getattr(self, flag)
            if not isinstance(value, (bool, np.bool_)):
                raise UsageError(f"{flag} must be True or False, not {value!r}", option=flag)
            object.__setattr__(self, flag, bool(value))


__all__ = ["FusionOptions", "check_reduce", "parse_memory_size", "MAX_REDUCE", "MIN_TILE_SIZE"]
