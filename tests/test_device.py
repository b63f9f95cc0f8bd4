import platform
import subprocess
import sys

import pytest
import torch

from focusfuse.backends import device as device_module
from focusfuse.backends.device import keep_freed_memory, resolve_device
from focusfuse.errors import UsageError

CHILD = """
import resource, torch
from focusfuse.backends.device import keep_freed_memory, release_free_memory
applied = keep_freed_memory()
counts = []
for _ in range(8):  # 64 MB blocks: mmap'ed and faulted afresh each time unless malloc keeps memory
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del x
release_free_memory()
print(applied, min(counts[1:]))
"""


def test_kept_memory_is_reused_without_page_faults():
    # in a child process: the setting is process-wide
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout.split()
    applied, faults = out[0] == "True", int(out[1])
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert applied and faults < 1000  # later blocks reuse kept pages; a fresh one faults ~16000
    else:
        assert not applied


def test_keep_freed_memory_changes_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(device_module.sys, "platform", "darwin")
    device_module._glibc.cache_clear()
    try:
        assert keep_freed_memory() is False
        device_module.release_free_memory()  # a no-op, no error
    finally:
        device_module._glibc.cache_clear()


def test_resolve_device_rejects_unknown_names():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError):
        resolve_device("tpu")
