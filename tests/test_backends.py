import os
import platform
import re
import subprocess
import sys

import pytest
import torch

from focusfuse.backends import malloc as malloc_module
from focusfuse.backends.malloc import keep_freed_memory
from focusfuse.backends.select import resolve_device
from focusfuse.errors import UsageError

CHILD = """
import sys, torch
from focusfuse.backends.malloc import free_heap_bytes, keep_freed_memory, release_free_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def allocate():
    x = torch.empty(64 << 20, dtype=torch.uint8).fill_(1)  # 64 MB: mmap'ed and unmapped at free unless kept
    del x
if sys.argv[2] == "thread":  # a thread made after the setting shares the main heap, which keeps the block
    import threading
    thread = threading.Thread(target=allocate)
    thread.start()
    thread.join()
else:
    allocate()
kept = free_heap_bytes()
release_free_memory()
print(applied, kept, free_heap_bytes())
"""


def _child(mode: str, where: str = "main", environment: dict[str, str] | None = None) -> list[str]:
    """Run CHILD in a fresh process (the malloc setting is process-wide): [applied, kept, after_release]."""
    run = subprocess.run([sys.executable, "-c", CHILD, mode, where], capture_output=True, text=True, check=True,
                         env={**os.environ, **(environment or {})})
    return run.stdout.split()


def test_kept_memory_stays_in_the_heap_until_released():
    # counted by glibc's own books (mallinfo2), not page faults: those depend on other processes' memory
    applied, kept, _ = _child("keep")  # after release_free_memory glibc may madvise the block instead of
    # shrinking the heap, so its books still count it free: the release is not checked here
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert applied == "True"
        assert int(kept) >= 64 << 20  # the freed block is kept for the next tensor
        _, kept_by_default, _ = _child("default")
        assert int(kept_by_default) < 64 << 20  # without the setting it goes back to the system at free
        _, kept_in_thread, _ = _child("keep", "thread", {"MALLOC_ARENA_MAX": "1"})
        assert int(kept_in_thread) >= 64 << 20  # a worker thread of a one-arena process (local Dask workers)
    else:
        assert applied == "False"


def test_keep_freed_memory_changes_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(malloc_module.sys, "platform", "darwin")
    malloc_module._glibc.cache_clear()
    try:
        assert keep_freed_memory() is False
        malloc_module.release_free_memory()  # a no-op, no error
    finally:
        malloc_module._glibc.cache_clear()


def _openmp_spin_count(code: str, **env: str) -> str | None:
    """GOMP_SPINCOUNT as the OpenMP runtime that torch loaded in a fresh process running ``code`` reports it."""
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**environment, "OMP_DISPLAY_ENV": "VERBOSE", **env})
    assert run.returncode == 0, run.stderr
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", run.stderr)
    return found.group(1) if found else None


def test_importing_focusfuse_first_makes_openmp_threads_sleep_instead_of_spinning():
    default = _openmp_spin_count("import torch; torch.ones(2)")
    if default is None:
        pytest.skip("torch's OpenMP runtime is not GNU's (it reports no GOMP_SPINCOUNT)")
    assert default != "0"  # the runtime's default spins
    assert _openmp_spin_count("import focusfuse, torch; torch.ones(2)") == "0"
    assert _openmp_spin_count("import focusfuse, torch; torch.ones(2)", OMP_WAIT_POLICY="ACTIVE") != "0"  # kept
    assert _openmp_spin_count("import focusfuse, torch; torch.ones(2)", GOMP_SPINCOUNT="5000") == "5000"


def test_resolve_device_rejects_unknown_names():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError):
        resolve_device("tpu")


# ------------------------------------------------------------------------------------- kernels

import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from focusfuse.backends.base import Backend  # noqa: E402
from focusfuse.backends.cpu import CpuBackend  # noqa: E402
from focusfuse.backends.cpu_kernels import conv_to_one_channel  # noqa: E402
from focusfuse.backends.cuda import device_pixels_to_frame  # noqa: E402
from focusfuse.backends.select import select_backend  # noqa: E402
from focusfuse.methods.gacn.network import GacnNetwork  # noqa: E402
from focusfuse.ops.color import to_gray, to_tensor  # noqa: E402
from focusfuse.ops.filters import gaussian_kernel1d, gradient_energy, separable_filter  # noqa: E402

from conftest import focus_pair  # noqa: E402

CPU = torch.device("cpu")
BACKENDS = [Backend(CPU), CpuBackend(CPU)]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("k", [0, 3])  # 64 -> 48, and the last block 16 -> 1 (a single output channel)
def test_conv_block_kernel_equals_the_module(model, backend, k):
    block = model.decision.blocks[k]
    x = torch.rand(1, block.conv.in_channels, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(backend.conv_block(block, x.clone()), block(x), atol=1e-5)


@pytest.mark.parametrize("shape,k", [((2, 64, 19, 23), 7), ((1, 16, 2, 3), 7), ((1, 5, 9, 8), 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_to_one_channel_equals_conv2d(shape, k, channels_last):
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(1, shape[1], k, k, dtype=torch.float64)
    expected = F.conv2d(x, weight, padding=k // 2)
    assert torch.allclose(conv_to_one_channel(x, weight), expected, atol=1e-10)


@pytest.mark.parametrize("height", [37, 8, 3])
@pytest.mark.parametrize("k,channels_last", [(7, True), (3, False)])
def test_conv_to_one_channel_in_bands_of_rows_equals_conv2d(monkeypatch, height, k, channels_last):
    monkeypatch.setattr("focusfuse.backends.cpu_kernels.TAP_BAND_BYTES", 1)  # the smallest bands: 8 or 12 rows
    x = torch.randn(2, 6, height, 11, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(1, 6, k, k, dtype=torch.float64)
    expected = F.conv2d(x, weight, padding=k // 2)
    assert torch.allclose(conv_to_one_channel(x, weight), expected, atol=1e-10)


def test_cpu_single_output_conv_gives_the_spatial_se_gate(model):
    sse = model.decision.sse_in
    x = torch.rand(1, 64, 21, 17).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(CpuBackend(CPU).single_output_conv(sse.conv, x).sigmoid(), sse.gate(x), atol=1e-5)


def test_cpu_separable_filter_on_few_channels_equals_the_depthwise_convolution():
    # few channels take shifted additions, many take convolutions: both must be the same filter
    taps = gaussian_kernel1d(9, 2.0, dtype=torch.float64) * torch.linspace(0.5, 1.5, 9, dtype=torch.float64)
    backend = CpuBackend(CPU)
    for channels in (1, 2, 8):
        x = torch.rand(2, channels, 12, 7, dtype=torch.float64)  # width < taps: windows clipped on both sides
        weight = (taps[:, None] * taps[None, :]).expand(channels, 1, 9, 9)
        expected = F.conv2d(x, weight, padding=4, groups=channels)
        assert torch.allclose(backend.separable_filter(x, taps), expected, atol=1e-12)
        assert torch.allclose(separable_filter(x, taps), expected, atol=1e-12)
    with pytest.raises(ValueError):
        backend.separable_filter(torch.rand(1, 1, 5, 5), torch.ones(4))


def test_in_place_gradient_energy_equals_the_plain_one():
    x = torch.rand(2, 5, 13, 17).contiguous(memory_format=torch.channels_last)
    fast = Backend(CPU).gradient_energy(x)
    assert torch.allclose(fast, gradient_energy(x), atol=1e-7)
    assert fast.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_network_on_a_backend_computes_the_model(model, backend):
    a, b, _ = focus_pair(40, 48)
    ga, gb = to_gray(to_tensor(a))[None], to_gray(to_tensor(b))[None]
    net = GacnNetwork(model, backend)
    with torch.inference_mode():
        sf_a, sf_b = model.focus_measure(ga), model.focus_measure(gb)
        assert torch.allclose(net.focus_measure(ga), sf_a, rtol=1e-4, atol=1e-6)
        assert torch.allclose(net.decision_logit(sf_a, sf_b), model.decision_logit(sf_a, sf_b), atol=1e-4)
        p0 = model.initial_map(sf_a, sf_b)
        assert torch.allclose(net.refine(p0, ga, gb), model.refine(p0, ga, gb), atol=1e-5)


def test_bfloat16_decision_path_keeps_fused_pixels_within_one_level(good_model):
    """The CUDA backend's decision precision, run here through CPU autocast: parity with float32."""
    from focusfuse import fuse_pair

    a, b, _ = focus_pair(160, 192, seed=3, channels=3)
    a8, b8 = (np.round(x * 255).astype(np.uint8) for x in (a, b))
    full = fuse_pair(a8, b8, weights=good_model, device=CpuBackend(CPU))
    half = fuse_pair(a8, b8, weights=good_model, device=CpuBackend(CPU, decision_dtype=torch.bfloat16))
    within = np.abs(full.fused.astype(int) - half.fused.astype(int)) <= 1
    assert within.mean() >= 0.999
    assert not np.array_equal(full.decision_map, half.decision_map)  # the bf16 path really ran


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535), (np.float32, 1)])
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)])
def test_device_side_conversion_equals_the_host_one(dtype, scale, shape):
    pixels = (np.random.default_rng(0).random(shape) * scale).astype(dtype)
    host = torch.from_numpy(np.ascontiguousarray(pixels))
    assert torch.equal(device_pixels_to_frame(host), to_tensor(pixels))


def test_select_backend_picks_the_cpu_backend_and_passes_a_backend_through():
    backend = select_backend("cpu")
    assert isinstance(backend, CpuBackend) and backend.device == CPU
    assert select_backend(backend) is backend
    assert backend.host_budget(1 << 30, 500 << 20) == 1 << 30
    assert 500 << 20 < backend.host_budget(None, 500 << 20) <= 8 << 30  # what the process holds, and more
    assert backend.device_budget() is None  # the network runs in main memory


class HostCuda(__import__("focusfuse.backends.cuda", fromlist=["CudaBackend"]).CudaBackend):
    """The CUDA backend's own choices (integer staging, device-side conversion, batches from its memory model)
    run on the CPU: only what needs a GPU (streams, pinned memory) is left out."""

    def __init__(self) -> None:
        Backend.__init__(self, CPU)  # float32: the bfloat16 path has its own parity test above

    def device_budget(self) -> int:
        return 8 << 30

    def stage(self, pixels):
        return torch.from_numpy(np.ascontiguousarray(pixels))

    def upload(self, staged):
        return device_pixels_to_frame(staged.to(self.device))

    def session(self):
        return torch.inference_mode()


def test_the_cuda_backends_choices_fuse_a_stack_like_the_cpu_backend(good_model):
    from focusfuse import fuse_stack
    from conftest import textured

    frames = [np.round(textured(90, 100, s, 3) * 65535).astype(np.uint16) for s in range(6)]
    backend = HostCuda()
    assert backend.frames_per_batch(90 * 100, 4 << 30) == backend.max_batch  # several frames at once
    cpu = fuse_stack(frames, weights=good_model, device=CpuBackend(CPU), align="none")
    cuda_like = fuse_stack(frames, weights=good_model, device=backend, align="none")
    assert cuda_like.fused.dtype == np.uint16
    assert np.mean(np.abs(cpu.fused.astype(int) - cuda_like.fused.astype(int)) <= 257) >= 0.999
    assert np.mean(cpu.index_map == cuda_like.index_map) >= 0.999
