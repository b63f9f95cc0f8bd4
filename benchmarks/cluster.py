"""Scale-out on Dask: one process vs a local cluster of worker processes, wall time and peak memory per process.

Two cases, inputs generated (no shared data needed):
- stacks: 8 stacks of 10 RGB frames of 520x520 (gacn26's size) through ``batch``;
- pair: a 12000x12000 16-bit RGB pair (tiled BigTIFF frames, as in large.py) through ``stack``, tiled under a
  memory limit (the same for the single process and for each worker).
Each run happens in a fresh child process (its own peak RSS); on a cluster the workers' peaks are read from them
before it closes. Outputs of both runs are compared byte for byte.

    python benchmarks/cluster.py stacks --weights W [--workers 2] [--device cuda] [--markdown docs/benchmarks.md]
    python benchmarks/cluster.py pair --size 12000 --weights W [--workers 2] [--memory-limit 4G]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from large import frame_tile, write_frame  # noqa: E402
from measure import report_results  # noqa: E402

BEGIN, END = "<!-- cluster:begin -->", "<!-- cluster:end -->"


def peak_rss_mb() -> float:
    """This process's own peak (a worker's ru_maxrss would carry the client's, from which its nanny started it)."""
    from focusfuse.jobs.report import peak_resident_bytes

    return peak_resident_bytes() / 2**20


def make_stacks(root: Path, stacks: int = 8, frames: int = 10, size: int = 520) -> None:
    """``stacks`` folders of ``frames`` 8-bit RGB PNGs, each stack a different crop of the analytic scene."""
    import cv2

    for s in range(stacks):
        folder = root / f"stack{s}"
        folder.mkdir(parents=True)
        for k, focus in enumerate(np.linspace(0.05, 0.95, frames)):
            tile = frame_tile(s * 97, s * 131, size, size, 4 * size, float(focus))
            cv2.imwrite(str(folder / f"z{k:02d}.png"), (tile >> 8).astype(np.uint8)[..., ::-1])


def measure(case: str, inputs: Path, out: Path, weights: str, workers: int, memory_limit: str, device: str) -> dict:
    """In the child: run the case (on a local cluster of ``workers`` processes, or here for 0)."""
    from focusfuse.cluster.connect import cluster_client
    from focusfuse.engine.options import FusionOptions
    from focusfuse.jobs.batch import run_batch
    from focusfuse.jobs.stack_job import StackJob, run_stack
    from focusfuse.methods.gacn.weights import load_model

    from focusfuse.backends.select import resolve_device

    model = load_model(weights, resolve_device(device))
    with cluster_client(workers or None) as client:
        start = time.perf_counter()
        if case == "stacks":
            template = StackJob(inputs=[], output=Path(), options=FusionOptions(align="none"))
            report = run_batch(inputs, out, template, model, device=device, client=client)
            assert report["ok"] == len(report["stacks"]), report
        else:
            job = StackJob(inputs=sorted(inputs.glob("*.tif")), output=out / "fused.tif", compression="zlib",
                           options=FusionOptions(align="none", memory_limit=memory_limit))
            report = run_stack(job, model, device=device, client=client)
        seconds = time.perf_counter() - start
        workers_peak = list(client.run(peak_rss_mb).values()) if client is not None else []
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "workers_peak_rss_mb": workers_peak,
            "tiles": report.get("tiles")}


def run_child(case: str, inputs: Path, out: Path, weights: str, workers: int, memory_limit: str,
              device: str) -> dict:
    cmd = [sys.executable, __file__, "_measure", case, "--inputs", str(inputs), "--out", str(out), "--weights",
           weights, "--workers", str(workers), "--memory-limit", memory_limit, "--device", device]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> str:
    """How the outputs of two runs compare: identical, or the largest difference and how many pixels differ."""
    files = sorted(p.name for p in a.glob("*.tif"))
    worst, differing, total = 0, 0, 0
    for name in files:
        x, y = tifffile.imread(a / name).astype(np.int64), tifffile.imread(b / name).astype(np.int64)
        d = np.abs(x - y)
        worst, differing, total = max(worst, int(d.max())), differing + int((d > 0).sum()), total + d.size
    if worst == 0:
        return f"{len(files)} outputs byte-for-byte identical in pixels"
    return f"{len(files)} outputs: {differing} of {total} values differ, by at most {worst}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["stacks", "pair", "_measure"])
    parser.add_argument("what", nargs="?", default=None)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=12000)
    parser.add_argument("--memory-limit", default="4G", help="per process, for the pair")
    parser.add_argument("--device", default="cpu", help="cpu, cuda (the workers of a local cluster share it)")
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    if args.case == "_measure":
        print(json.dumps(measure(args.what, args.inputs, args.out, args.weights, args.workers, args.memory_limit,
                                 args.device)))
        return

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        inputs = Path(tmp, "inputs")
        inputs.mkdir()
        if args.case == "stacks":
            make_stacks(inputs)
            what = "8 stacks of 10 RGB frames of 520x520, `batch`"
        else:
            for k, focus in enumerate((0.3, 0.7)):
                write_frame(inputs / f"z{k}.tif", args.size, focus)
            what = f"a {args.size}x{args.size} 16-bit RGB pair, `stack` with --memory-limit {args.memory_limit}"
        runs = {}
        for workers in (0, args.workers):
            out = Path(tmp, f"out{workers}")
            out.mkdir()
            runs[workers] = run_child(args.case, inputs, out, args.weights, workers, args.memory_limit, args.device)
            print(workers, runs[workers], flush=True)
        same = compare(Path(tmp, "out0"), Path(tmp, f"out{args.workers}"))
    one, many = runs[0], runs[args.workers]
    peaks = ", ".join(f"{p:.0f}" for p in many["workers_peak_rss_mb"])
    lines = [f"{what}, device {args.device}: 1 process {one['seconds']:.1f} s, peak {one['peak_rss_mb']:.0f} MB; "
             f"{args.workers} local Dask workers {many['seconds']:.1f} s (cluster start-up included), "
             f"peak per worker {peaks} MB, client {many['peak_rss_mb']:.0f} MB; {same}"]
    report_results(lines, args.markdown, BEGIN, END, "Scale-out on Dask")


if __name__ == "__main__":
    main()
