"""Evaluate fused images against their sources with the fusion metrics (library side of ``focusfuse evaluate``).

Layouts understood by :func:`find_cases`:

* SOURCES as a folder of sets: ``NAME_1.*``, ``NAME_2.*`` (and ``NAME_3.*``... for N-source sets); the
  sources of a set are ordered by their number.
* SOURCES as a folder of stacks: one sub-folder ``NAME/`` per stack holding its frames (any file names),
  ordered naturally (``img2`` before ``img10``).

Both may be mixed in one folder. FUSED holds ``NAME{suffix}.*`` and the optional GT folder ``NAME.*``.
Any problem (a fused or ground-truth image missing, a set with a single source, a name found twice,
nothing found at all) raises :class:`ValueError` with a one-line message that lists every offending
name, before any metric is computed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.images import list_images, natural_key, read_image, write_text_atomic
from .metrics import FULL_REFERENCE_METRIC_NAMES, METRIC_NAMES, compute_all, to_gray_matlab

_NUMBERED_SOURCE = re.compile(r"^(?P<name>.+)_(?P<index>\d+)$")

ProgressCallback = Callable[[int, int, str], None]
Row = dict[str, "str | float"]


@dataclass(frozen=True)
class Case:
    """One fusion result to evaluate: its name, its source images (in order), the fused image, a ground truth."""

    name: str
    sources: tuple[Path, ...]
    fused: Path
    gt: Path | None = None


# --------------------------------------------------------------------------------------------------
# Finding cases
# --------------------------------------------------------------------------------------------------


def _numbered_sets(folder: Path) -> dict[str, list[Path]]:
    """``NAME_k.*`` files of a folder grouped by NAME, each group ordered by k."""
    groups: dict[str, list[tuple[int, Path]]] = {}
    for path in list_images(folder):
        match = _NUMBERED_SOURCE.match(path.stem)
        if match:
            groups.setdefault(match["name"], []).append((int(match["index"]), path))
    return {name: [p for _, p in sorted(members)] for name, members in groups.items()}


def _stack_folders(folder: Path) -> dict[str, list[Path]]:
    """Sub-folders holding at least one image, each with its frames in natural order."""
    stacks = {}
    for sub in sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        frames = list_images(sub)
        if frames:
            stacks[sub.name] = frames
    return stacks


def _images_by_stem(folder: Path) -> dict[str, list[Path]]:
    """Images of a folder keyed by file name without extension."""
    index: dict[str, list[Path]] = {}
    for path in list_images(folder):
        index.setdefault(path.stem, []).append(path)
    return index


def _lookup(index: dict[str, list[Path]], stem: str, folder: Path) -> Path | None:
    """The single image named ``stem.*`` (None if absent; ValueError if several extensions match)."""
    matches = index.get(stem, [])
    if len(matches) > 1:
        raise ValueError(f"ambiguous image for {stem!r} in {folder}: {', '.join(p.name for p in matches)}")
    return matches[0] if matches else None


def _require_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ValueError(f"{what} folder not found: {path}")
    return path


def case_files(cases: Sequence[Case]) -> list[Path]:
    """Every file the cases read: sources, fused images, ground truths."""
    return [path for case in cases for path in (*case.sources, case.fused, case.gt) if path is not None]


def find_cases(
    sources_dir: str | Path,
    fused_dir: str | Path,
    *,
    suffix: str = "",
    gt_dir: str | Path | None = None,
) -> list[Case]:
    """Pair every source set (``NAME_k.*`` files or ``NAME/`` stack folders) with ``fused_dir/NAME{suffix}.*``.

    Cases come back in natural order of NAME. Raises :class:`ValueError` (one line, naming everything that
    is wrong) when a fused or ground-truth image is missing, a set has a single source, a NAME is both a
    numbered set and a stack folder, or no source set is found.
    """
    sources_root = _require_folder(Path(sources_dir), "sources")
    fused_root = _require_folder(Path(fused_dir), "fused")
    gt_root = _require_folder(Path(gt_dir), "ground-truth") if gt_dir is not None else None

    numbered, stacks = _numbered_sets(sources_root), _stack_folders(sources_root)
    both = sorted(set(numbered) & set(stacks), key=natural_key)
    if both:
        raise ValueError(f"names used both by NAME_k files and a stack folder in {sources_root}: {', '.join(both)}")
    source_sets = {**numbered, **stacks}
    if not source_sets:
        raise ValueError(f"no source sets in {sources_root} (expected NAME_1.*, NAME_2.* files or stack sub-folders)")
    single = sorted((n for n, s in source_sets.items() if len(s) < 2), key=natural_key)
    if single:
        raise ValueError(f"source sets with a single image in {sources_root}: {', '.join(single)}")

    names = sorted(source_sets, key=natural_key)
    fused_index = _images_by_stem(fused_root)
    fused_paths = {n: _lookup(fused_index, n + suffix, fused_root) for n in names}
    missing_fused = [f"{n}{suffix}.*" for n, p in fused_paths.items() if p is None]
    if missing_fused:
        raise ValueError(f"missing fused image(s) in {fused_root}: {', '.join(missing_fused)}")
    gt_paths: dict[str, Path | None] = dict.fromkeys(names)
    if gt_root is not None:
        gt_index = _images_by_stem(gt_root)
        gt_paths = {n: _lookup(gt_index, n, gt_root) for n in names}
        missing_gt = [f"{n}.*" for n, p in gt_paths.items() if p is None]
        if missing_gt:
            raise ValueError(f"missing ground-truth image(s) in {gt_root}: {', '.join(missing_gt)}")
    return [Case(name=n, sources=tuple(source_sets[n]), fused=fused_paths[n], gt=gt_paths[n]) for n in names]


# --------------------------------------------------------------------------------------------------
# Reading and evaluating
# --------------------------------------------------------------------------------------------------


def _read_gray(path: Path) -> np.ndarray:
    """A file as a gray image on 0..255; float files hold 0..1 (as focusfuse writes them)."""
    image = read_image(path)
    if image.dtype.kind == "f":
        image = image.astype(np.float64) * 255.0
    try:
        return to_gray_matlab(image)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from err


def evaluate_case(case: Case) -> Row:
    """Metric values of one case: ``{"name": ..., "Qg": ..., ...}`` (+ PSNR and SSIM with a ground truth)."""
    sources = [_read_gray(p) for p in case.sources]
    fused = _read_gray(case.fused)
    gt = _read_gray(case.gt) if case.gt is not None else None
    shapes = {p.name: img.shape for p, img in zip((*case.sources, case.fused), (*sources, fused))}
    if gt is not None:
        shapes[case.gt.name] = gt.shape
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{name} {w}x{h}" for name, (h, w) in shapes.items())  # width x height, as elsewhere
        raise ValueError(f"{case.name}: image sizes differ ({listing})")
    try:
        metrics = compute_all(sources, fused, gt)
    except ValueError as err:  # e.g. images too small for a metric's window
        raise ValueError(f"{case.name}: {err}") from err
    return {"name": case.name, **metrics}


def evaluate_cases(cases: Sequence[Case], *, progress: ProgressCallback | None = None) -> list[Row]:
    """Evaluate every case in order; ``progress(i, n, name)`` is called after case i (1-based) of n is done."""
    rows = []
    for i, case in enumerate(cases, start=1):
        rows.append(evaluate_case(case))
        if progress is not None:
            progress(i, len(cases), case.name)
    return rows


def metric_columns(rows: Iterable[Row]) -> list[str]:
    """Metric keys present in the rows, in the canonical order (six no-reference metrics, then PSNR, SSIM)."""
    present: list[str] = []
    for row in rows:
        present.extend(k for k in row if k != "name" and k not in present)
    canonical = [*METRIC_NAMES, *FULL_REFERENCE_METRIC_NAMES]
    return [k for k in canonical if k in present] + [k for k in present if k not in canonical]


def summarize(rows: Sequence[Row]) -> dict[str, float]:
    """Mean of every metric over the rows (rows lacking a metric are left out of its mean)."""
    means = {}
    for key in metric_columns(rows):
        values = [float(row[key]) for row in rows if key in row]
        means[key] = math.fsum(values) / len(values)
    return means


# --------------------------------------------------------------------------------------------------
# Writing results
# --------------------------------------------------------------------------------------------------


def _json_number(value: str | float) -> str | float | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(rows: Sequence[Row], path: str | Path) -> None:
    """Write ``{"cases": rows, "mean": summarize(rows)}`` as strict JSON (non-finite values, e.g. the
    PSNR of identical images, become ``null``)."""
    document = {
        "cases": [{k: _json_number(v) for k, v in row.items()} for row in rows],
        "mean": {k: _json_number(v) for k, v in summarize(rows).items()},
    }
    write_text_atomic(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def write_csv(rows: Sequence[Row], path: str | Path) -> None:
    """Write one line per case: ``name`` then the metric columns (full precision; ``inf`` as ``inf``)."""
    columns = ["name", *metric_columns(rows)]
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, handle.getvalue())
