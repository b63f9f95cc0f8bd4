"""Run a command in a child process and measure its wall time and its own peak resident memory; append dated
result lines to a marked section of a markdown file."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
import tempfile
import time


def run_measured(cmd: list[str]) -> tuple[int, str, str, float, float]:
    """(exit code, stdout, stderr, seconds, peak RSS in MB of that child).

    The peak is the child's ``ru_maxrss``, which Linux carries over fork and exec: it is at least this
    process's resident memory when the child started, so run it from a small process (as the benchmarks do).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), seconds, usage.ru_maxrss / 1024


def append_results(markdown: Path, lines: list[str], begin: str, end: str, title: str) -> None:
    """Append ``lines`` (dated, with the machine) between the markers ``begin`` and ``end`` of ``markdown``; a
    new section ``title`` holding them when the markers are not there yet."""
    stamp = f"{dt.date.today().isoformat()}, {platform.processor() or platform.machine()}"
    entry = "\n".join(f"- {line} ({stamp})" for line in lines)
    old = markdown.read_text() if markdown.exists() else ""
    if begin in old:
        body = old[old.index(begin) + len(begin):old.index(end)].strip("\n")
        new = old[: old.index(begin)] + f"{begin}\n{body}\n{entry}\n{end}" + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + f"\n\n### {title}\n\n{begin}\n{entry}\n{end}\n"
    markdown.write_text(new)


def report_results(lines: list[str], markdown: Path | None, begin: str, end: str, title: str) -> None:
    """Print ``lines``; with ``markdown``, also append them there (see :func:`append_results`)."""
    for line in lines:
        print(line)
    if markdown:
        append_results(markdown, lines, begin, end, title)
