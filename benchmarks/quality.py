"""Fusion quality on the 26 GACN test pairs: focusfuse with given weights vs the official outputs.

Fuses every pair of ../shared/data/test/gacn26 with each ``--weights`` (through focusfuse's own
pipeline), evaluates the six metrics, and prints their means next to those of the authors' published
fused images (../shared/reference/gacn_official/gacn26). With ``--markdown`` the table is written
to that file (between markers, so docs/benchmarks.md can hold other sections too).

    python benchmarks/quality.py --weights weights/focusfuse-gacn.pt \
        --weights ../shared/reference/gacn_official/GACN.pkl --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import torch

from focusfuse.evaluation.evaluate import evaluate_cases, find_cases, summarize
from focusfuse import fuse_pair
from focusfuse.io.images import write_image
from focusfuse.evaluation.metrics import METRIC_NAMES
from focusfuse.methods.gacn.weights import load_model

from shared_data import SHARED  # noqa: E402
PAIRS = SHARED / "data" / "test" / "gacn26"
OFFICIAL_FUSED = SHARED / "reference" / "gacn_official" / "gacn26"
BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"


def fuse_all(weights: str, out_dir: Path, device: str, reduce: int = 1, swapped: bool = False,
             boundary_blend: str | None = None) -> float:
    """Fuse the 26 pairs into out_dir/NAME.png (``swapped``: NAME_2 as the first frame; ``boundary_blend`` as
    in fuse_pair); returns seconds spent fusing. The six metrics are symmetric in the two sources, so both
    orders are scored the same way."""
    model = load_model(weights, device)
    seconds = 0.0
    for first in sorted(PAIRS.glob("*_1.png")):
        name = first.name[: -len("_1.png")]
        frames = (PAIRS / f"{name}_2.png", first) if swapped else (first, PAIRS / f"{name}_2.png")
        start = time.perf_counter()
        result = fuse_pair(*frames, weights=model, device=device, reduce=reduce, boundary_blend=boundary_blend)
        seconds += time.perf_counter() - start
        write_image(out_dir / f"{name}.png", result.fused)
    return seconds


def means_for(fused_dir: Path, suffix: str = "") -> dict[str, float]:
    return summarize(evaluate_cases(find_cases(PAIRS, fused_dir, suffix=suffix)))


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    head = "| result | " + " | ".join(METRIC_NAMES) + " |\n|---|" + "---|" * len(METRIC_NAMES)
    lines = [head]
    for label, means in rows:
        lines.append(f"| {label} | " + " | ".join(f"{means[m]:.4f}" for m in METRIC_NAMES) + " |")
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the quality section of a markdown file (or append it)."""
    section = f"{BEGIN}\n{text}\n{END}"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + section + old[old.index(END) + len(END):]
    else:
        new = (old.rstrip() + "\n\n" if old else "") + section + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", action="append", required=True, help="weights file or name (repeatable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--reduce", type=int, action="append", default=None,
                        help="--reduce factor(s) (decision path resolution), each run with every --weights (default 1)")
    parser.add_argument("--swapped", action="store_true",
                        help="give each pair's second frame first (GACN is not exactly symmetric in its inputs)")
    parser.add_argument("--boundary-blend", action="append", default=None,
                        help="fuse_pair's boundary_blend (learned, off, blend weights), each run with every --weights "
                             "(default: the default, learned)")
    args = parser.parse_args()
    if args.swapped and args.markdown:
        parser.error("--swapped runs are not the quality table of docs/benchmarks.md: drop --markdown")

    rows = [("official fused images (authors' code)", means_for(OFFICIAL_FUSED, "_fused"))]
    timings = []
    for weights in args.weights:
        for reduce, blend in ((r, b) for r in args.reduce or [1] for b in args.boundary_blend or [None]):
            label = (Path(weights).name + (f", --reduce {reduce}" if reduce > 1 else "")
                     + (f", --boundary-blend {Path(blend).name}" if blend else "")
                     + (", frames swapped" if args.swapped else ""))
            with tempfile.TemporaryDirectory() as tmp:
                seconds = fuse_all(weights, Path(tmp), args.device, reduce, args.swapped, blend)
                rows.append((f"focusfuse, weights `{label}`", means_for(Path(tmp))))
                timings.append(f"{label}: {seconds:.1f} s for 26 pairs")
    text = table(rows)
    print(text)
    print("; ".join(timings))
    if args.markdown:
        stamp = (f"Measured {dt.date.today().isoformat()} on {platform.processor() or platform.machine()}, "
                 f"{torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}. "
                 + "; ".join(timings) + ".")
        write_section(args.markdown, "### Fusion quality on the 26 GACN test pairs (mean of each metric)\n\n"
                      + text + "\n\n" + stamp)


if __name__ == "__main__":
    main()
