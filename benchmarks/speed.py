"""Speed and memory: focusfuse against a plain eager float32 translation of the paper's computation.

Cases (each runs in its own process, so peak memory is its own):
  pair520    a 520x520 gacn26 pair, network + refinement + blend on tensors in memory ("model time")
  api520     the public API, focusfuse.fuse_pair on the color_lytro_05 PNG files, in a plain Python process,
             against the reference path on the same files in the same process
  pair2700   two V-4 frames upscaled to 2700x1800, model time and peak GPU memory
  pair2700e  that pair end to end: PNG files in -> fused PNG written (focusfuse only)
  gacn26     the 26 gacn26 pairs through fuse_pair with file paths (reads included), in one process
  v4         the 65-frame V-4 stack end to end through `focusfuse stack --json` (default settings, alignment
             on) in a child process: job time (the report's seconds), wall time, time from process start to
             the first frame, peak RSS and GPU memory
  v4none     the same with --align none
  v4wavelet  the same with --method wavelet (the classical pyramid method: no network), alignment on
  v4host     the V-4 job with the network replaced by a stand-in of negligible cost (benchmarks/host_only.py):
             the host work a GPU run still pays (reads, alignment, warps, blending, writes)

Times are the median of --repeats runs after one warm-up, except the V-4 cases (one run each; the reference
path runs on the first --ref-frames frames and is scaled to 65: its cost per frame is constant). Like
focusfuse's CPU backend, every case process keeps freed memory for reuse (both paths profit). Every
speed-up is a ratio measured on the same machine in the same session. --json writes the rows, --markdown
the table into docs/benchmarks.md.

    python benchmarks/speed.py --device cpu --markdown docs/benchmarks.md
    python benchmarks/speed.py --device cpu --cases v4host
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reference_gacn  # noqa: E402
from focusfuse.jobs.report import peak_resident_bytes  # noqa: E402

from shared_data import SHARED  # noqa: E402
V4 = SHARED / "data" / "stacks" / "V-4"
GACN26 = SHARED / "data" / "test" / "gacn26"
PAIR520 = GACN26 / "color_lytro_01"
API520 = GACN26 / "color_lytro_05"
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
CASES = ("pair520", "api520", "pair2700", "pair2700e", "gacn26", "v4", "v4none", "v4wavelet", "v4host")


def peak_rss_mb() -> float:
    return peak_resident_bytes() / 2**20  # this process's own (ru_maxrss would carry its parent's)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    if size is not None:
        image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(image)


def to_batch(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(device)


def pair_images(case: str) -> tuple[np.ndarray, np.ndarray]:
    if case == "pair520":
        return load_rgb(Path(f"{PAIR520}_1.png")), load_rgb(Path(f"{PAIR520}_2.png"))
    return load_rgb(V4 / "V010.jpg", (2700, 1800)), load_rgb(V4 / "V050.jpg", (2700, 1800))


def reference_state(model, device: torch.device) -> dict:
    from focusfuse.methods.gacn.weights import read_weights

    return {k: v.to(device) for k, v in read_weights(model.source)[0].items()}


def run_case(case: str, weights: str | None, device_name: str, repeats: int, ref_frames: int) -> dict:
    """One case, in this process."""
    import focusfuse
    from focusfuse.backends.select import select_backend
    from focusfuse.engine.fuse import fuse_tensors
    from focusfuse.methods.gacn.network import GacnNetwork
    from focusfuse.methods.gacn.weights import load_model

    backend = select_backend(device_name)
    device = backend.device
    model = load_model(weights, device)
    out: dict = {"case": case}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if case in ("pair520", "pair2700"):
        a, b = pair_images(case)
        ta, tb = to_batch(a, device), to_batch(b, device)
        net = GacnNetwork(model, backend)
        with backend.session():
            out["ours_s"] = timed(lambda: fuse_tensors(net, ta[0], tb[0]), device, repeats)
            out["peak_rss_mb"] = peak_rss_mb()  # before the reference path runs in this process
            if device.type == "cuda":
                out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            state = reference_state(model, device)
            out["ref_s"] = timed(lambda: reference_gacn.fuse_pair(ta, tb, state), device, max(1, repeats // 2))
            fused_ours = fuse_tensors(net, ta[0], tb[0])[0]
            fused_ref = reference_gacn.fuse_pair(ta, tb, state)[0][0]
        diff = (fused_ours * 255).round() - (fused_ref * 255).round()
        out["within_1lsb"] = float((diff.abs() <= 1).float().mean())
    elif case == "api520":
        paths = (f"{API520}_1.png", f"{API520}_2.png")
        out["ours_s"] = timed(lambda: focusfuse.fuse_pair(*paths, weights=model, device=backend), device, repeats)
        out["peak_rss_mb"] = peak_rss_mb()
        state = reference_state(model, device)

        def reference() -> None:
            ta, tb = (to_batch(load_rgb(Path(p)), device) for p in paths)
            reference_gacn.fuse_pair(ta, tb, state)

        out["ref_s"] = timed(reference, device, repeats)
        out["ref_note"] = "reference path on the same PNG files, same process"
    elif case == "pair2700e":
        a, b = pair_images("pair2700")
        with tempfile.TemporaryDirectory() as tmp:
            pa, pb = Path(tmp, "a.png"), Path(tmp, "b.png")
            cv2.imwrite(str(pa), a[:, :, ::-1])
            cv2.imwrite(str(pb), b[:, :, ::-1])
            out["ours_s"] = timed(lambda: focusfuse.run_pair(pa, pb, Path(tmp, "f.png"), model, overwrite=True),
                                  device, repeats)
    elif case == "gacn26":
        names = sorted(p.name[:-len("_1.png")] for p in GACN26.glob("*_1.png"))
        run = lambda: [focusfuse.fuse_pair(GACN26 / f"{n}_1.png", GACN26 / f"{n}_2.png", weights=model,  # noqa: E731
                                           device=backend) for n in names]
        out["ours_s"] = timed(run, device, max(1, repeats // 2))
        out["note"] = f"{len(names)} pairs, files read, in one process"
    elif case == "v4host":
        from host_only import HostOnlyMethod

        with tempfile.TemporaryDirectory() as tmp:
            job = focusfuse.StackJob(inputs=[V4], output=Path(tmp, "v4.png"), overwrite=True)
            first: list[float] = []
            start = time.perf_counter()
            report = focusfuse.run_stack(job, model, method=HostOnlyMethod(),
                                         progress=lambda *a: first or first.append(time.perf_counter() - start))
            out["ours_s"] = report["seconds"]
            out["first_frame_s"] = first[0] if first else None
        out["note"] = "network and refinement replaced by a stand-in (host work only)"
    elif case == "v4ref":
        frames = sorted(V4.glob("*.jpg"))
        state = reference_state(model, device)
        start = time.perf_counter()
        with torch.inference_mode():
            reference_gacn.fuse_stack_eq18([to_batch(load_rgb(f), device) for f in frames[:ref_frames]], state)
        sync(device)
        out["ref_s"] = (time.perf_counter() - start) * (len(frames) - 1) / max(ref_frames - 1, 1)
    out.setdefault("peak_rss_mb", peak_rss_mb())
    if device.type == "cuda":
        out.setdefault("peak_gpu_mb", torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def run_cli_v4(case: str, weights: str | None, device: str) -> dict:
    """`focusfuse stack` on V-4 in a child process: wall, job, first frame (from process start), peak RSS."""
    align = "none" if case == "v4none" else "auto"
    method = ["--method", "wavelet"] if case == "v4wavelet" else (["--weights", weights] if weights else [])
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "focusfuse.cli", "stack", str(V4), "-o", str(Path(tmp, "v4.png")), "--json",
               "--align", align, "--device", device] + method
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = None
        report = None
        for line in proc.stdout:
            event = json.loads(line)
            if first is None and event["event"] in ("align", "frame"):
                first = time.perf_counter() - start
            if event["event"] == "done":
                report = event
        proc.wait()
        wall = time.perf_counter() - start
        if proc.returncode != 0 or report is None:
            raise RuntimeError(proc.stderr.read())
    return {"case": case, "ours_s": report["seconds"], "wall_s": wall, "first_frame_s": first,
            "peak_rss_mb": report["peak_rss_mb"], "peak_gpu_mb": report.get("peak_gpu_mb"),
            "note": f"align {align}, frames used {report['frames_used']}, method {report.get('method', 'gacn')}"}


def child(case: str, args: argparse.Namespace) -> dict:
    """Run ``case`` in a fresh process (this script with --one)."""
    cmd = [sys.executable, __file__, "--one", case, "--device", args.device, "--repeats", str(args.repeats),
           "--ref-frames", str(args.ref_frames)] + (["--weights", args.weights] if args.weights else [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{case}: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else '?'}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(case: str, args: argparse.Namespace) -> dict:
    if case in ("v4", "v4none", "v4wavelet"):
        row = run_cli_v4(case, args.weights, args.device)
        if case == "v4" and not args.no_reference:
            row["ref_s"] = child("v4ref", args)["ref_s"]
            row["ref_note"] = f"reference measured on {args.ref_frames} frames, scaled to 65 (no alignment)"
        return row
    return child(case, args)


def table(rows: list[dict]) -> str:
    lines = ["| case | focusfuse (s) | wall (s) | first frame (s) | reference (s) | speed-up | peak RSS (MB) | "
             "peak GPU (MB) | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | failed | | | | | | | {r['error']} |")
            continue
        ratio = f"{r['ref_s'] / r['ours_s']:.1f}x" if r.get("ref_s") else ""
        note = r.get("ref_note") or r.get("note", "")
        if "within_1lsb" in r:
            note = f"{100 * r['within_1lsb']:.3f}% of pixels within 1 LSB of the reference"
        fmt = lambda key, spec: format(r[key], spec) if r.get(key) is not None else "-"  # noqa: E731
        lines.append(f"| {r['case']} | {fmt('ours_s', '.3f')} | {fmt('wall_s', '.1f')} | {fmt('first_frame_s', '.2f')} "
                     f"| {fmt('ref_s', '.3f')} | {ratio} | {fmt('peak_rss_mb', '.0f')} | {fmt('peak_gpu_mb', '.0f')} "
                     f"| {note} |")
    return "\n".join(lines)


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if device.startswith("cuda") and torch.cuda.is_available() else ""
    return (f"{dt.date.today().isoformat()}, device {device}{gpu}, {cpu}, {os.cpu_count()} CPUs, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights (default: the shipped ones)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--host-only", action="store_true", help="only the host-only V-4 case (v4host)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-frames", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference path of the V-4 case")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    if args.one:
        from focusfuse.backends.malloc import keep_freed_memory

        keep_freed_memory()  # the reference path too: focusfuse's CPU backend sets it for every run
        print(json.dumps(run_case(args.one, args.weights, args.device, args.repeats, args.ref_frames)))
        return
    cases = ["v4host"] if args.host_only else args.cases.split(",")
    rows = []
    for case in cases:
        try:
            row = measure(case, args)
        except Exception as exc:  # one failing case must not hide the others
            row = {"case": case, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
        rows.append(row)
        print(json.dumps(row), flush=True)
    text = table(rows)
    stamp = f"{machine(args.device)}, median of {args.repeats} runs after a warm-up (V-4: one run)"
    print(f"\n{stamp}\n\n{text}")
    if args.json:
        args.json.write_text(json.dumps({"machine": stamp, "rows": rows}, indent=1) + "\n")
    if args.markdown:
        section = f"{BEGIN}\n### Speed ({stamp})\n\n{text}\n{END}"
        old = args.markdown.read_text() if args.markdown.exists() else ""
        if BEGIN in old:
            new = old[: old.index(BEGIN)] + section + old[old.index(END) + len(END):]
        else:
            new = old.rstrip() + "\n\n" + section + "\n"
        args.markdown.write_text(new)


if __name__ == "__main__":
    main()
