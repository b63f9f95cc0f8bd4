"""Summarise a gpu_check.sh run (tests, speed, parity) into OUT/gpu-check.json and OUT/gpu-check.md, with the
targets of the GPU acceptance (they apply to a CUDA run; a CPU run only shows that the check runs)."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

# (row, key, limit, unit): a CUDA run meets the target when the value is at most the limit
TARGETS = [
    ("v4", "ours_s", 1.5, "s", "V-4 job (align auto)"),
    ("v4", "wall_s", 4.0, "s", "V-4 wall (align auto)"),
    ("pair2700", "ours_s", 0.020, "s", "pair2700 model time"),
    ("pair2700", "peak_gpu_mb", 2048, "MB", "pair2700 peak GPU memory"),
    ("gacn26", "ours_s", 0.8, "s", "26 gacn26 pairs with I/O"),
]
PARITY_TARGET = 0.999


def test_summary(path: Path) -> dict:
    if not path.exists():
        return {"ran": False}
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [case.get("name") for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    skipped = sum(case.find("skipped") is not None for case in suite.iter("testcase"))
    return {"ran": True, "tests": int(suite.get("tests", 0)), "failed": failed, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=int, default=0)
    args = parser.parse_args()
    tests = test_summary(args.out / "gpu-tests.xml")
    speed = json.loads((args.out / "speed.json").read_text()) if (args.out / "speed.json").exists() else {"rows": []}
    parity = json.loads((args.out / "parity.json").read_text()) if (args.out / "parity.json").exists() else None
    rows = {row["case"]: row for row in speed["rows"]}
    targets = []
    for case, key, limit, unit, what in TARGETS:
        value = rows.get(case, {}).get(key)
        targets.append({"target": what, "value": value, "limit": limit, "unit": unit,
                        "met": value is not None and value <= limit})
    if parity is not None:
        targets.append({"target": "CPU/device parity, worst pair: share of pixels within 1 LSB",
                        "value": parity["worst_within_1lsb"], "limit": PARITY_TARGET, "unit": "",
                        "met": parity["worst_within_1lsb"] >= PARITY_TARGET})
    summary = {"device": args.device, "machine": speed.get("machine"), "check_seconds": args.seconds,
               "tests": tests, "speed": speed["rows"], "parity": parity and {k: v for k, v in parity.items()
                                                                              if k != "rows"},
               "targets": targets}
    (args.out / "gpu-check.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# gpu_check ({args.device}, {args.seconds} s)", "", f"Machine: {speed.get('machine')}", "",
             "The targets are those of a CUDA run (on the CPU the check only shows that everything runs).", ""]
    if tests.get("ran"):
        lines.append(f"Tests marked gpu: {tests['tests']} run, {len(tests['failed'])} failed, {tests['skipped']} "
                     f"skipped" + (f" (failed: {', '.join(tests['failed'])})" if tests["failed"] else ""))
    lines += ["", "| target | value | limit | met |", "|---|---|---|---|"]
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.4g} {t['unit']}".strip()
        lines.append(f"| {t['target']} | {value} | {t['limit']} {t['unit']} | {'yes' if t['met'] else 'no'} |")
    lines += ["", "Speed rows:", ""] + [f"- `{json.dumps(row)}`" for row in speed["rows"]]
    if parity is not None:
        lines += ["", f"Parity: worst of {parity['pairs']} pairs {100 * parity['worst_within_1lsb']:.4f}% of pixels "
                      f"within 1 LSB, worst PSNR {parity['worst_psnr_db']:.2f} dB"]
    (args.out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
