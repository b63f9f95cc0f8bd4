"""Alignment speed and agreement on a real stack (V-4): per-frame costs, totals, and old-vs-new transforms.

Run by hand (never a timed test). Compares focusfuse.align (this tree) with the single-file
implementation of a baseline commit (default f9b47a8, read with ``git show``): CPU time per frame of
decoding, reduction to working resolution, one neighbour step and one warp; total estimation time for
the whole stack with 1 and 2 threads; and, per frame, how far the new transforms put the corners and
centre from the old ones (full-resolution px), gain/offset differences and ok/failed status.
Prints a markdown summary.

    PYTHONPATH=src python benchmarks/align_speed.py [--stack ../shared/data/stacks/V-4] [--frames 65]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

from focusfuse.align import estimate as new
from focusfuse.align.geometry import largest_displacement, working_size
from focusfuse.align.steps import ecc_motion
from focusfuse.io.images import list_images, read_image

ROOT = Path(__file__).resolve().parents[1]
V4 = ROOT.parent / "shared" / "data" / "stacks" / "V-4"


def load_baseline(commit: str) -> ModuleType:
    """The baseline's focusfuse/align/estimate.py as a module of this package (its relative imports resolve)."""
    source = subprocess.run(["git", "show", f"{commit}:src/focusfuse/align/estimate.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "estimate_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("focusfuse.align._estimate_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cpu_ms(function: Callable[[], object]) -> tuple[float, object]:
    """CPU time (ms, all threads) of one call, and its result."""
    start = time.process_time()
    result = function()
    return (time.process_time() - start) * 1000, result


def wall_and_cpu_ms(function: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU time (ms) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def timed(function: Callable[[], object]) -> tuple[float, float, object]:
    """Wall and CPU time (s) of one call, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def per_frame_costs(module: ModuleType, frames: list[np.ndarray], alignment, repeat: int) -> dict[str, float]:
    """Mean ms per frame of reduce, neighbour step and warp (affine + exposure): the best of ``repeat`` passes."""
    passes = [one_pass_costs(module, frames, alignment) for _ in range(repeat)]
    return {stage: min(costs[stage] for costs in passes) for stage in passes[0]}


def one_pass_costs(module: ModuleType, frames: list[np.ndarray], alignment) -> dict[str, float]:
    """Mean CPU ms per frame of reduce, neighbour step and warp (and the warp's wall ms), one pass over the stack.

    Frames are reduced and compared in order, keeping only the previous one, as a streaming pass does
    (memory is reused as it would be there).
    """
    size = working_size(frames[0].shape[:2], 1024)
    reduce_ms, step_ms, previous = [], [], None
    for index, image in enumerate(frames):
        elapsed, current = cpu_ms(lambda: module.reduce_frame(image, index, size))
        reduce_ms.append(elapsed)
        if previous is not None:
            step_ms.append(cpu_ms(lambda: module.neighbour_step(previous, current, ecc_motion("auto")))[0])
        previous = current
    warped = [index for index, frame in enumerate(alignment.frames) if not np.allclose(frame.transform, np.eye(3))]
    warp_wall, warp_cpu = zip(*(wall_and_cpu_ms(lambda i=i: module.warp_frame(frames[i], alignment.frames[i],
                                                                              alignment.shape)) for i in warped))
    return {"reduce": float(np.mean(reduce_ms)), "step": float(np.mean(step_ms)), "warp": float(np.mean(warp_cpu)),
            "warp wall": float(np.mean(warp_wall))}


def identical(first, second) -> bool:
    """True when two alignments agree to the last bit."""
    return all(np.array_equal(a.transform, b.transform) and (a.gain, a.offset, a.ok) == (b.gain, b.offset, b.ok)
               for a, b in zip(first.frames, second.frames, strict=True))


def deviation_table(old, fresh) -> list[dict]:
    """Per frame: largest corner/centre displacement (full-resolution px) between two alignments, and the rest."""
    rows = []
    for index, (before, after) in enumerate(zip(old.frames, fresh.frames)):
        rows.append({
            "frame": index,
            "px": largest_displacement(before.transform, after.transform, old.shape),
            "gain": after.gain - before.gain,
            "offset": after.offset - before.offset,
            "ok": (before.ok, after.ok),
            "note": before.note == after.note and before.message == after.message,
        })
    return rows


def print_costs(costs: dict[str, dict[str, float]], decode_ms: float, threads: int) -> None:
    print(f"\n### Per-frame CPU time (ms; 'warp wall': wall-clock), OpenCV threads: {threads}\n")
    print("| stage | before | after | speed-up |\n|---|---:|---:|---:|")
    print(f"| decode (JPEG) | {decode_ms:.1f} | {decode_ms:.1f} | |")
    for stage in ("reduce", "step", "warp", "warp wall"):
        before, after = costs["old"][stage], costs["new"][stage]
        print(f"| {stage} | {before:.1f} | {after:.1f} | {before / after:.1f}x |")
    before = costs["old"]["reduce"] + costs["old"]["step"]
    after = costs["new"]["reduce"] + costs["new"]["step"]
    print(f"| reduce + step | {before:.1f} | {after:.1f} | {before / after:.1f}x |")


def print_totals(totals: dict[str, tuple[float, float]], count: int) -> None:
    print(f"\n### Estimating the whole stack ({count} decoded frames)\n")
    print("| run | wall s | CPU s | CPU ms / frame |\n|---|---:|---:|---:|")
    for name, (wall, cpu) in totals.items():
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {cpu / count * 1000:.0f} |")


def print_deviations(rows: list[dict]) -> None:
    worst = max(rows, key=lambda row: row["px"])
    changed = [row["frame"] for row in rows if row["ok"][0] != row["ok"][1]]
    texts = [row["frame"] for row in rows if not row["note"]]
    print("\n### New vs old transforms (full resolution)\n")
    print(f"- largest corner/centre displacement: {worst['px']:.4f} px (frame {worst['frame']}); "
          f"median {np.median([row['px'] for row in rows]):.4f} px; "
          f"frames above 0.01 px: {sum(row['px'] > 0.01 for row in rows)}")
    print(f"- largest |gain difference| {max(abs(row['gain']) for row in rows):.2e}, "
          f"largest |offset difference| {max(abs(row['offset']) for row in rows):.2e}")
    print(f"- ok/failed status changed: {changed or 'none'}; notes/messages changed: {texts or 'none'}\n")
    print("| frame | px | gain diff | offset diff | ok old/new |\n|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['frame']} | {row['px']:.4f} | {row['gain']:+.1e} | {row['offset']:+.1e} | "
              f"{row['ok'][0]}/{row['ok'][1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", type=Path, default=V4)
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--baseline", default="f9b47a8", help="commit whose estimate.py is the 'before'")
    parser.add_argument("--repeat", type=int, default=2, help="passes per measurement; the best one counts")
    args = parser.parse_args()
    old = load_baseline(args.baseline)
    paths = list_images(args.stack)[: args.frames]
    cv2.setNumThreads(1)
    decode_ms, frames = zip(*(cpu_ms(lambda p=p: read_image(p)) for p in paths))
    frames = list(frames)

    totals = {}
    for threads in (1, 2):
        cv2.setNumThreads(threads)
        runs = [timed(lambda: old.estimate_alignment(frames, mode="auto")) for _ in range(args.repeat)]
        totals[f"before, OpenCV threads {threads}"] = min((wall, cpu) for wall, cpu, _ in runs)
        old_alignment = runs[0][2]
    results = []
    for workers, threads in ((1, 1), (2, 1), (2, 2)):
        cv2.setNumThreads(threads)
        runs = [timed(lambda w=workers: new.estimate_alignment(frames, mode="auto", workers=w))
                for _ in range(args.repeat)]
        totals[f"after, workers {workers}, OpenCV threads {threads}"] = min((wall, cpu) for wall, cpu, _ in runs)
        results += [result for _, _, result in runs]
    fresh = results[0]

    print(f"## Alignment speed: {args.stack.name}, {len(frames)} frames "
          f"{frames[0].shape[1]}x{frames[0].shape[0]}, baseline {args.baseline}")
    for threads in (1, 2):
        cv2.setNumThreads(threads)
        costs = {"old": per_frame_costs(old, frames, old_alignment, args.repeat),
                 "new": per_frame_costs(new, frames, fresh, args.repeat)}
        print_costs(costs, float(np.mean(decode_ms)), threads)
    print_totals(totals, len(frames))
    same = all(identical(fresh, other) for other in results[1:])
    print(f"\nAll 'after' runs (1 and 2 workers) give identical floats: {'yes' if same else 'NO'}")
    print_deviations(deviation_table(old_alignment, fresh))


if __name__ == "__main__":
    main()
