"""The engine: options checked once, plans made before any work, ordered read-ahead, batches on the device."""

import os
import threading
import time

import numpy as np
import pytest
import torch

from focusfuse import fuse_pair, fuse_stack
from focusfuse.backends.cpu import CpuBackend
from focusfuse.engine.options import FusionOptions, parse_memory_size
from focusfuse.engine.plan import plan_fusion
from focusfuse.engine.prefetch import batches, prefetched
from focusfuse.errors import UsageError
from focusfuse.methods.gacn.method import GacnMethod

from conftest import textured

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------- options

@pytest.mark.parametrize("value,expected", [("4G", 4 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29),
                                            ("2048", 2048), (1 << 20, 1 << 20), ("64 kb", 64 << 10)])
def test_memory_sizes_are_parsed_in_binary_units(value, expected):
    assert parse_memory_size(value) == expected


@pytest.mark.parametrize("kwargs,message", [
    ({"strategy": "best"}, "unknown strategy"), ({"align": "rigid"}, "unknown alignment"),
    ({"reduce": 0}, "reduce must be"), ({"reduce": 2.0}, "reduce must be"), ({"tile_size": 8}, "at least 16"),
    ({"tile_size": -1}, "tile size"), ({"memory_limit": "a lot"}, "give a size"),
    ({"memory_limit": "10M"}, "at least 256 MiB"), ({"workers": -2}, "workers must be"),
    ({"memory_limit": True}, "give a size"), ({"memory_limit": -1}, "give a size"),
])
def test_bad_options_are_refused_in_plain_words(kwargs, message):
    with pytest.raises(UsageError, match=message) as error:
        FusionOptions(**kwargs)
    assert "--" not in str(error.value)  # library errors name no command-line flag


def test_options_are_normalised_once():
    options = FusionOptions(reduce=np.int64(2), tile_size=np.int32(64), memory_limit="1G")
    assert (options.reduce, options.tile_size, options.memory_limit) == (2, 64, 1 << 30)
    assert type(options.reduce) is int and type(options.tile_size) is int


# ---------------------------------------------------------------------------------------- plans

def _method(model, strategy="calibrated", reduce=1):
    return GacnMethod(model, CpuBackend(CPU), strategy, reduce)


def test_a_memory_limit_sets_the_tile_size(model):
    backend = CpuBackend(CPU)
    big = plan_fusion((6000, 6000), 3, np.uint8, _method(model), backend, FusionOptions(memory_limit="8G"))
    small = plan_fusion((6000, 6000), 3, np.uint8, _method(model), backend, FusionOptions(memory_limit="2G"))
    assert small.tiled and big.tile_size > small.tile_size > 0
    whole = plan_fusion((200, 300), 3, np.uint8, _method(model), backend, FusionOptions(memory_limit="2G"))
    assert not whole.tiled and whole.tiles[0].core.shape == (200, 300)


def test_outputs_held_in_memory_count_against_the_limit(model):
    backend = CpuBackend(CPU)
    with pytest.raises(UsageError, match="memory limit"):
        plan_fusion((6000, 6000), 3, np.uint8, _method(model), backend, FusionOptions(memory_limit="1G"),
                    held_bytes=2 << 30)


def test_serial_in_tiles_is_refused_before_any_alignment(model, monkeypatch):
    import focusfuse.engine.alignment as alignment

    def no_alignment(*args, **kwargs):
        raise AssertionError("the alignment pass ran")

    monkeypatch.setattr(alignment, "estimate_stack_alignment", no_alignment)
    frames = [np.round(textured(80, 90, s, 3) * 255).astype(np.uint8) for s in range(3)]
    with pytest.raises(UsageError, match="serial strategy cannot run in tiles"):
        fuse_stack(frames, weights=model, device="cpu", strategy="serial", tile_size=32, align="auto")


# ----------------------------------------------------------------------------------- read-ahead

def test_prefetched_keeps_order_and_bounds_the_work_in_flight():
    from concurrent.futures import ThreadPoolExecutor

    running, most = 0, 0
    lock = threading.Lock()

    def load(i):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002 * (i % 3))
        with lock:
            running -= 1
        return i * i

    with ThreadPoolExecutor(4) as pool:
        results = []
        for value in prefetched(range(20), load, pool, depth=3):
            results.append(value)
    assert results == [i * i for i in range(20)]
    assert most <= 3


def test_prefetched_raises_in_order_and_stops_early():
    from concurrent.futures import ThreadPoolExecutor

    loaded = []

    def load(i):
        loaded.append(i)
        if i == 2:
            raise ValueError("frame 2 is broken")
        return i

    with ThreadPoolExecutor(2) as pool:
        seen = []
        with pytest.raises(ValueError, match="frame 2"):
            for value in prefetched(range(50), load, pool, depth=2):
                seen.append(value)
    assert seen == [0, 1] and max(loaded) <= 4


def test_batches_split_in_order():
    assert list(batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]


# -------------------------------------------------------------------------------------- batches

class BatchingCpu(CpuBackend):
    """The CPU backend running the network on several frames at once, as the CUDA backend does."""

    def frames_per_batch(self, pixels, budget):
        return 3


@pytest.mark.parametrize("strategy", ["calibrated", "calibration", "serial"])
def test_frames_in_batches_fuse_as_one_by_one(good_model, strategy):
    frames = [np.round(textured(60, 70, s, 3) * 255).astype(np.uint8) for s in range(7)]
    one = fuse_stack(frames, weights=good_model, device=CpuBackend(CPU), strategy=strategy, align="none")
    many = fuse_stack(frames, weights=good_model, device=BatchingCpu(CPU), strategy=strategy, align="none")
    assert len(np.unique(one.index_map)) > 2  # the decisions vary
    assert np.abs(one.fused.astype(int) - many.fused).max() <= 1 and np.mean(one.fused != many.fused) < 1e-3
    assert np.mean(one.index_map != many.index_map) < 1e-3


# --------------------------------------------------------------------------------- whole runs

def test_a_stack_array_is_a_stack(model):
    frames = np.stack([np.round(textured(30, 40, s, 3) * 255).astype(np.uint8) for s in range(3)])
    as_array = fuse_stack(frames, weights=model, device="cpu", align="none")
    as_list = fuse_stack(list(frames), weights=model, device="cpu", align="none")
    assert np.array_equal(as_array.fused, as_list.fused) and as_array.frames == as_list.frames
    gray = frames[..., 1]  # (Z, Y, X)
    assert fuse_stack(gray, weights=model, device="cpu", align="none").fused.shape == (30, 40)


def test_workers_do_not_change_the_result(good_model):
    frames = [np.round(textured(70, 60, s, 3) * 255).astype(np.uint8) for s in range(5)]
    serial = fuse_stack(frames, weights=good_model, device="cpu", align="none", workers=0)
    threaded = fuse_stack(frames, weights=good_model, device="cpu", align="none", workers=3)
    assert np.array_equal(serial.fused, threaded.fused) and np.array_equal(serial.index_map, threaded.index_map)


def test_a_memory_limit_tiles_a_pair_and_keeps_the_result(good_model):
    a = np.round(textured(400, 420, 1, 3) * 255).astype(np.uint8)
    b = np.round(textured(400, 420, 2, 3) * 255).astype(np.uint8)
    whole = fuse_pair(a, b, weights=good_model, device="cpu", tile_size=0)
    backend = CpuBackend(CPU)
    backend.bytes_per_pixel = 40000  # the budget fits tiles of ~200 px only: the plan must tile
    tiled = fuse_pair(a, b, weights=good_model, device=backend, memory_limit="4G")
    method = GacnMethod(good_model, backend)  # the network's working set is its backend's
    plan = plan_fusion((400, 420), 3, np.uint8, method, backend, FusionOptions(memory_limit="4G"))
    assert plan.tiled and 64 <= plan.tile_size < 400
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert np.mean(whole.fused != tiled.fused) < 1e-3


def test_kept_memory_is_handed_back_only_when_it_would_shrink_the_plan(model):
    from focusfuse.engine.run import _plan
    from focusfuse.io.sinks import ArrayOutput

    class KeepingCpu(CpuBackend):
        """A CPU backend whose allocator keeps 1 GiB of freed memory from an earlier run."""

        released = 0

        def reusable_memory(self):
            return 1 << 30

        def release_memory(self):
            self.released += 1

    backend = KeepingCpu(CPU)
    method = GacnMethod(model, backend, "pair")
    small = _plan((300, 400), 3, np.uint8, method, backend, FusionOptions(memory_limit="4G"), ArrayOutput(), [])
    assert not small.tiled and backend.released == 0  # fits as it is: the kept memory stays for reuse
    backend.bytes_per_pixel = 40000
    big = _plan((600, 700), 3, np.uint8, method, backend, FusionOptions(memory_limit="4G"), ArrayOutput(), [])
    assert big.tiled and backend.released == 1  # would tile: what earlier runs kept is handed back first


MEMORY_CHILD = """
import sys
import cv2, numpy as np
from focusfuse import fuse_stack
from focusfuse.jobs.report import peak_resident_bytes
rng = np.random.default_rng(0)
scene = cv2.GaussianBlur(rng.random((1000, 1200, 3)).astype(np.float32), (0, 0), 1.5)
frames = [np.round(np.clip(cv2.GaussianBlur(np.roll(scene, k, axis=1), (0, 0), s) * 1.6 - 0.3, 0, 1) * 255)
          .astype(np.uint8) for k, s in enumerate((0.6, 1.5, 2.5))]
del scene
result = fuse_stack(frames, weights=sys.argv[1], device="cpu", align="translation", memory_limit="1G")
print(result.tiles, peak_resident_bytes())  # its own peak (ru_maxrss would carry this test runner's)
"""


def test_a_tiled_run_keeps_its_memory_limit(weights_file):
    """Peak resident memory of a whole process (imports, alignment, tiles) within --memory-limit 1G."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(weights_file)], capture_output=True, text=True,
                         check=True).stdout.split()
    tiles, peak = int(out[0]), int(out[1])
    assert tiles > 1  # the limit made the run tile
    assert peak <= 1 << 30, f"peak RSS {peak >> 20} MiB over the 1024 MiB limit"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only: a child's peak through VmHWM")
def test_a_process_reports_its_own_peak_memory_not_its_parents():
    """A process started by a large one (a notebook, a test runner) reports its own peak: getrusage's ru_maxrss
    would carry the parent's resident memory over the fork and exec."""
    import subprocess
    import sys

    held = np.ones(600 << 17)  # 600 MiB resident in this process
    code = "from focusfuse.jobs.report import peak_resident_bytes; print(peak_resident_bytes())"
    child_peak = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout)
    assert held.sum() > 0 and child_peak < 400 << 20, f"child peak {child_peak >> 20} MiB"


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_each_frame_of_an_aligned_tiff_stack_is_decoded_once(model, tmp_path, monkeypatch, compression):
    import cv2
    import tifffile

    import focusfuse.frames.sources as sources

    scene = textured(192, 208, 4, 3)  # tiles whose crop (with the halo) is not the whole frame
    pages = [np.round(cv2.GaussianBlur(np.roll(scene, k, axis=1), (0, 0), s) * 255).astype(np.uint8)
             for k, s in enumerate((0.5, 1.5, 2.5))]
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack(pages), photometric="rgb", compression=compression, rowsperstrip=16)
    decodes: list[str] = []
    whole, region = sources.read_frame, sources.read_tiff_region
    monkeypatch.setattr(sources, "read_frame", lambda ref: decodes.append("whole") or whole(ref))
    monkeypatch.setattr(sources, "read_tiff_region", lambda *a, **k: decodes.append("region") or region(*a, **k))
    result = fuse_stack(path, weights=model, device="cpu", align="translation", tile_size=64)
    assert result.tiles > 1 and not result.skipped
    # the alignment pass decodes each page whole; tiles then read the kept pixels (compressed) or the file's
    # own uncompressed strips, which is no decoding
    assert decodes.count("whole") == 3
    assert decodes.count("region") == (0 if compression else len(decodes) - 3)


@pytest.mark.parametrize("tile_size", [0, 1024])
def test_a_given_tile_size_that_breaks_the_memory_limit_is_refused(model, tile_size):
    from dataclasses import replace

    from focusfuse.engine.plan import resident_memory

    backend = CpuBackend(CPU)
    method = GacnMethod(model, backend)
    limit = resident_memory() + backend.runtime_reserve + (100 << 20)
    options = FusionOptions(memory_limit=limit)
    with pytest.raises(UsageError, match="about .* MiB") as err:
        plan_fusion((2000, 2000), 3, np.dtype(np.uint8), method, backend, replace(options, tile_size=tile_size))
    assert err.value.option == "memory_limit"
    small = plan_fusion((2000, 2000), 3, np.dtype(np.uint8), method, backend, replace(options, tile_size=64))
    assert len(small.tiles) > 1  # tiles that fit are kept


def test_an_output_that_is_not_a_sink_is_refused_before_any_work(model):
    from focusfuse.errors import UsageError

    frames = [np.zeros((24, 24), np.uint8)] * 2
    with pytest.raises(UsageError, match="not an output sink"):
        fuse_stack(frames, weights=model, device="cpu", output="x.png")
