"""focusfuse: GPU-accelerated focus stacking with GACN (Gradient Aware Cascade Network).

The pipeline, one package per step: :mod:`~focusfuse.io` (read/write, metadata) -> :mod:`~focusfuse.frames`
(frames, sources, edge fill) -> :mod:`~focusfuse.align` -> :mod:`~focusfuse.methods` (GACN: features,
decisions, strategies) on a :mod:`~focusfuse.backends` backend (CPU, CUDA) -> :mod:`~focusfuse.engine`
(plan, read-ahead, tiles) -> :mod:`~focusfuse.jobs` (files in, files out), scaled out by
:mod:`~focusfuse.cluster` (Dask); see docs/architecture.md.

    >>> import focusfuse
    >>> result = focusfuse.fuse_pair("a.png", "b.png")          # doctest: +SKIP
    >>> stack = focusfuse.fuse_stack("frames/", strategy="calibrated")  # doctest: +SKIP
    >>> report = focusfuse.batch("stacks/", "fused/", client=dask_client)  # doctest: +SKIP

Importing the package loads nothing heavy: each name below is imported when first used.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# torch's CPU kernels run on OpenMP threads, which by default spin while they wait. On a machine busy with other
# work a spinning thread holds a core its team needs, and tiled runs took 12-18x longer (docs/benchmarks.md). The
# OpenMP runtime reads this once, when torch loads: set here, before any import of torch; a user's choice is kept.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

_EXPORTS = {
    # fusion, arrays or files in, arrays out
    "fuse_pair": "engine.fuse", "fuse_stack": "engine.fuse", "PairResult": "engine.fuse", "StackResult": "engine.fuse",
    "FusionOptions": "engine.options", "parse_memory_size": "engine.options",
    # jobs, files in, files out (what the CLI runs)
    "StackJob": "jobs.stack_job", "run_stack": "jobs.stack_job", "run_pair": "jobs.pair_job",
    "batch": "jobs.batch", "run_batch": "jobs.batch",
    "discover_stacks": "jobs.batch", "write_aligned_frames": "jobs.aligned_frames",
    "run_demo": "jobs.demo", "height_map": "jobs.depth", "depth_preview": "jobs.depth",
    "smooth_index_map": "jobs.depth",
    # scoring
    "evaluate_cases": "evaluation.evaluate", "find_cases": "evaluation.evaluate",
    # images and metadata
    "read_image": "io.images", "write_image": "io.images", "read_metadata": "io.metadata",
    # weights, model, backends, alignment
    "GACN": "methods.gacn.model", "load_model": "methods.gacn.weights", "save_weights": "methods.gacn.weights",
    "select_backend": "backends.select", "release_free_memory": "backends.malloc",
    "estimate_alignment": "align.estimate", "warp_frame": "align.estimate",
    # errors
    "FocusFuseError": "errors", "InputError": "errors", "UsageError": "errors", "WeightsError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'focusfuse' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
