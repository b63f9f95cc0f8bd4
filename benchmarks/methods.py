"""The fusion methods side by side: gacn26 metrics, synthetic ground truth, speed and memory on this machine.

For every ``--method`` (default: all that focusfuse has):

- the six metrics' means on the 26 gacn26 pairs (fused through ``fuse_pair``);
- PSNR/SSIM on the synthetic stacks and pairs of ``benchmarks/boundary.py`` (ground truth);
- a 520x520 pair (color_lytro_05, PNG paths through ``fuse_pair``: median of 5 after a warm-up);
- the 65-frame V-4 stack end to end through ``focusfuse stack`` with ``--align auto`` (a child process:
  job and wall seconds, peak RSS).

``--focus-stack PATH`` also runs that focus-stack binary on V-4 (it aligns and fuses by default), timed the
same way, so both sit in one table measured on one machine.

    python benchmarks/methods.py --markdown docs/methods-table.md [--focus-stack ~/focus-stack/build/focus-stack]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from focusfuse import fuse_pair
from focusfuse.evaluation.evaluate import evaluate_cases, find_cases, summarize
from focusfuse.evaluation.metrics import METRIC_NAMES
from focusfuse.evaluation.synthetic import COMPOSITING
from focusfuse.io.images import write_image
from focusfuse.methods import METHOD_NAMES

import boundary  # noqa: E402
from shared_data import SHARED  # noqa: E402

PAIRS = SHARED / "data" / "test" / "gacn26"
V4 = SHARED / "data" / "stacks" / "V-4"


def gacn26_means(method: str) -> tuple[dict[str, float], float]:
    """Means of the six metrics and the seconds spent fusing the 26 pairs."""
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for first in sorted(PAIRS.glob("*_1.png")):
            name = first.name[: -len("_1.png")]
            start = time.perf_counter()
            result = fuse_pair(first, PAIRS / f"{name}_2.png", method=method, device="cpu")
            seconds += time.perf_counter() - start
            write_image(Path(tmp) / f"{name}.png", result.fused)
        return summarize(evaluate_cases(find_cases(PAIRS, tmp))), seconds


def pair_seconds(method: str, repeat: int = 5) -> float:
    a, b = PAIRS / "color_lytro_05_1.png", PAIRS / "color_lytro_05_2.png"
    fuse_pair(a, b, method=method, device="cpu")  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fuse_pair(a, b, method=method, device="cpu")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_child(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of a command run to completion (peak RSS by /usr/bin/time)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *command], capture_output=True,
                              text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
        peak_kb = float(Path(rss.name).read_text().split()[-1])
    return wall, peak_kb / 1024, done.stdout


def v4_focusfuse(method: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        wall, peak, out = timed_child([sys.executable, "-m", "focusfuse", "stack", str(V4), "-o",
                                       f"{tmp}/fused.png", "--method", method, "--json"])
    report = json.loads(out.strip().splitlines()[-1])
    return {"job": report["seconds"], "wall": wall, "rss": peak}


def v4_focus_stack(binary: str) -> dict[str, float]:
    frames = sorted(str(p) for p in V4.glob("V*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        wall, peak, _ = timed_child([binary, f"--output={tmp}/fused.jpg", *frames])
    return {"job": None, "wall": wall, "rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append", default=None, choices=METHOD_NAMES)
    parser.add_argument("--focus-stack", default=None, help="a focus-stack binary to time on V-4 as well")
    parser.add_argument("--skip-v4", action="store_true")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--compositing", choices=COMPOSITING, default="extended",
                        help="the synthetic scenes' layer model (slab: as before 2026-12-05's seventh session)")
    args = parser.parse_args()
    methods = args.method or list(METHOD_NAMES)
    if not PAIRS.is_dir():
        raise SystemExit(f"needs {PAIRS} (set FOCUSFUSE_SHARED)")

    from focusfuse.methods.gacn.weights import load_model

    model = load_model(None, "cpu")
    sets = {"stacks": boundary.stack_scenes(20, 8, 8.0, 6, 0, args.compositing),
            "pairs": boundary.pair_scenes(40, (2.0, 8.0), 6, 0, args.compositing)}
    rows = []
    for method in methods:
        means, seconds26 = gacn26_means(method)
        truth = boundary.evaluate(sets, {method: boundary.fuse_with(model, {"method": method})}, False)
        row = {"method": method, **means, "gacn26_s": seconds26, "pair_s": pair_seconds(method),
               "stacks_psnr": truth["stacks"][method]["psnr"], "stacks_ssim": truth["stacks"][method]["ssim"],
               "pairs_psnr": truth["pairs"][method]["psnr"], "pairs_ssim": truth["pairs"][method]["ssim"]}
        if not args.skip_v4:
            row["v4"] = v4_focusfuse(method)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.focus_stack and not args.skip_v4:
        rows.append({"method": "focus-stack", "v4": v4_focus_stack(args.focus_stack)})
        print(json.dumps(rows[-1]), flush=True)

    lines = ["| method | " + " | ".join(METRIC_NAMES) + " | stacks PSNR / SSIM | pairs PSNR / SSIM | 520x520 pair (s) "
             "| V-4, align auto: job / wall (s), peak RSS (MB) |", "|---" * (len(METRIC_NAMES) + 5) + "|"]
    for row in rows:
        metrics = " | ".join(f"{row[m]:.4f}" if m in row else "" for m in METRIC_NAMES)
        truth = (f"{row['stacks_psnr']:.2f} / {row['stacks_ssim']:.4f} | {row['pairs_psnr']:.2f} / "
                 f"{row['pairs_ssim']:.4f}" if "stacks_psnr" in row else " | ")
        pair = f"{row['pair_s']:.3f}" if "pair_s" in row else ""
        v4 = row.get("v4")
        v4_text = "" if v4 is None else (f"{'-' if v4['job'] is None else format(v4['job'], '.1f')} / "
                                         f"{v4['wall']:.1f}, {v4['rss']:.0f}")
        lines.append(f"| {row['method']} | {metrics} | {truth} | {pair} | {v4_text} |")
    stamp = (f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPUs, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}, device cpu.")
    text = "\n".join(lines) + "\n\n" + stamp + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
