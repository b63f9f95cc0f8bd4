"""Speed and memory: focusfuse vs a plain eager float32 translation of the paper's computation.

Cases (each run in its own process, so peak memory is its own):
  pair520   a 520x520 gacn26 pair, network + refinement + blend (tensors in memory)
  pair2700  two V-4 frames upscaled to 2700x1800, the same ("model time")
  pair2700e the same pair end to end: PNG files in -> fused PNG written (focusfuse only)
  v4        the 65-frame V-4 stack end to end: JPEG files in -> fused PNG written

Peak RSS is focusfuse's: recorded before the reference path runs. Times are the median of --repeats
runs after one warm-up (the V-4 reference path runs once, on the first
--ref-frames frames, and is scaled to 65 frames: its cost per frame is constant). Every speed-up is a ratio
measured in the same run. Like the CLI, each case process first calls
focusfuse.backends.device.keep_freed_memory (both paths profit; --system-malloc leaves malloc as it is).
Results go to docs/benchmarks.md with --markdown.

    python benchmarks/speed.py --weights weights/focusfuse-gacn.pt --device cpu --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_gacn  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
V4 = SHARED / "data" / "stacks" / "V-4"
PAIR520 = SHARED / "data" / "test" / "gacn26" / "color_lytro_01"
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def run_case(case: str, weights: str, device_name: str, repeats: int, ref_frames: int, reduce: int = 1) -> dict:
    from focusfuse.engine.pair import fuse_tensors
    from focusfuse.jobs.stack_job import StackJob, run_pair, run_stack
    from focusfuse.methods.gacn.weights import load_model, read_weights

    device = torch.device(device_name)
    model = load_model(weights, device)
    state = {k: v.to(device) for k, v in read_weights(model.source)[0].items()}
    out: dict = {"case": case}
    if case in ("pair520", "pair2700"):
        a, b = pair_images(case)
        ta, tb = to_batch(a, device), to_batch(b, device)
        with torch.inference_mode():
            out["ours_s"] = timed(lambda: fuse_tensors(model, ta[0], tb[0], reduce), device, repeats)
            out["peak_rss_mb"] = peak_rss_mb()  # before the reference path runs in this process
            out["ref_s"] = timed(lambda: reference_gacn.fuse_pair(ta, tb, state), device, max(1, repeats // 2))
            fused_ours = fuse_tensors(model, ta[0], tb[0], reduce)[0]
            fused_ref = reference_gacn.fuse_pair(ta, tb, state)[0][0]
        diff = (fused_ours * 255).round() - (fused_ref * 255).round()
        out["within_1lsb"] = float((diff.abs() <= 1).float().mean())
    elif case == "pair2700e":
        a, b = pair_images("pair2700")
        with tempfile.TemporaryDirectory() as tmp:
            pa, pb = Path(tmp, "a.png"), Path(tmp, "b.png")
            cv2.imwrite(str(pa), a[:, :, ::-1])
            cv2.imwrite(str(pb), b[:, :, ::-1])
            out["ours_s"] = timed(lambda: run_pair(pa, pb, Path(tmp, "f.png"), model, overwrite=True, reduce=reduce),
                                  device, repeats)
    elif case.startswith("v4"):
        align = "auto" if case == "v4" else "none"
        with tempfile.TemporaryDirectory() as tmp:
            job = StackJob(inputs=[V4], output=Path(tmp, "v4.png"), align=align, overwrite=True, reduce=reduce)
            start = time.perf_counter()
            report = run_stack(job, model)
            sync(device)
            out["ours_s"] = time.perf_counter() - start
            out["tiles"] = report.get("tiles")
        out["peak_rss_mb"] = peak_rss_mb()
        frames = sorted(V4.glob("*.jpg"))
        start = time.perf_counter()
        with torch.inference_mode():
            reference_gacn.fuse_stack_eq18([to_batch(load_rgb(f), device) for f in frames[:ref_frames]], state)
        sync(device)
        out["ref_s"] = (time.perf_counter() - start) * (len(frames) - 1) / max(ref_frames - 1, 1)
        out["ref_note"] = f"measured on {ref_frames} frames, scaled to {len(frames)}"
    out.setdefault("peak_rss_mb", peak_rss_mb())
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default="pair520,pair2700,pair2700e,v4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ref-frames", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--reduce", type=int, default=1,
                        help="focusfuse's --reduce (the reference path stays at full resolution; no --markdown)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="Leave malloc as it is (the CLI calls focusfuse.backends.device.keep_freed_memory).")
    args = parser.parse_args()
    if args.reduce != 1 and args.markdown:
        parser.error("--reduce runs are not the speed table of docs/benchmarks.md: drop --markdown")
    if args.one:
        if not args.system_malloc:
            from focusfuse.backends.device import keep_freed_memory

            keep_freed_memory()
        print(json.dumps(run_case(args.one, args.weights, args.device, args.repeats, args.ref_frames, args.reduce)))
        return
    rows = []
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--one", case, "--weights", args.weights, "--device", args.device,
               "--repeats", str(args.repeats), "--ref-frames", str(args.ref_frames), "--reduce", str(args.reduce)] \
            + (["--system-malloc"] if args.system_malloc else [])
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rows.append(result)
        print(result, flush=True)
    lines = ["| case | focusfuse (s) | reference (s) | speed-up | peak RSS (MB) | peak GPU (MB) | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ref_s'] / r['ours_s']:.1f}x" if "ref_s" in r else ""
        note = r.get("ref_note", "")
        if "within_1lsb" in r:
            note = f"{100 * r['within_1lsb']:.3f}% of pixels within 1 LSB of the reference"
        ref = f"{r['ref_s']:.3f}" if "ref_s" in r else "-"
        gpu = f"{r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r else "-"
        lines.append(f"| {r['case']} | {r['ours_s']:.3f} | {ref} | {ratio} | {r['peak_rss_mb']:.0f} | {gpu} | {note} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        cpu = platform.processor() or platform.machine()
        stamp = (f"{dt.date.today().isoformat()}, device {args.device}, {cpu}, {torch.get_num_threads()} threads, "
                 f"torch {torch.__version__}, median of {args.repeats} runs after a warm-up"
                 + (", system malloc" if args.system_malloc else ""))
        section = f"{BEGIN}\n### Speed ({stamp})\n\n{table}\n{END}"
        old = args.markdown.read_text() if args.markdown.exists() else ""
        if BEGIN in old:
            new = old[: old.index(BEGIN)] + section + old[old.index(END) + len(END):]
        else:
            new = old.rstrip() + "\n\n" + section + "\n"
        args.markdown.write_text(new)


if __name__ == "__main__":
    main()
