"""A thread-safe streaming estimator: frames handed over in any order, neighbour steps computed ahead in parallel."""

from __future__ import annotations

import concurrent.futures
import copy
import threading
from collections.abc import Callable

import numpy as np

from .chain import _Chain, add_frame, add_unusable, frame_alignments, recover_failed, snap_to_identity
from .geometry import resize_matrix, working_size
from .model import StackAlignment, check_mode, identity_alignment, pick_reference
from .reduce import Reduced, check_frame, reduce_frame
from .steps import Step, ecc_motion, neighbour_step

StepKey = tuple[int, int]  # (anchor, frame): the step from frame to anchor
_STARTED = object()  # a step whose computation has been handed out but has not finished
MIN_WORKING_SIDE = 32  # px: a frame compared (at its working size) on fewer rows or columns has no room for ECC


class AlignmentEstimator:
    """Estimates a stack's alignment from frames handed over in any order, from several threads.

    Each frame is reduced to working resolution when it is added (see :func:`reduce_frame`); the
    neighbour steps between consecutive frames are computed as soon as both frames are there, on
    ``executor`` or in the adding thread. The chain logic (which neighbour each frame links to,
    failed frames, recovery) runs in frame order, so the result is the same, to the last bit,
    whatever the order of ``add`` calls and the number of threads, OpenCV's included (except in
    mode "homography", which runs OpenCV's own ECC: its last bits follow how OpenCV splits its
    work among its threads). A frame's working-resolution images are dropped as soon as the chain
    cannot need them any more: with frames arriving roughly in order only a few are held at a
    time. ``executor`` must run its tasks in this process (a thread pool: the steps share the
    frames' images; OpenCV and NumPy release the GIL).
    """

    def __init__(self, count: int, shape: tuple[int, int], *, mode: str = "auto", reference: int | None = None,
                 max_size: int = 1024, executor: concurrent.futures.Executor | None = None) -> None:
        check_mode(mode)
        if max_size < 32:
            raise ValueError(f"max_size must be at least 32, got {max_size}")
        if count < 1:
            raise ValueError("no frames to align")
        pick_reference(reference, count)
        self._count: int | None = count
        self._shape = (int(shape[0]), int(shape[1]))
        self._mode, self._reference, self._executor = mode, reference, executor
        self._size = working_size(self._shape, max_size)
        if min(self._size) < MIN_WORKING_SIDE:
            raise ValueError(f"frames of {self._shape[1]}x{self._shape[0]} are too narrow to align (compared at "
                             f"{self._size[0]}x{self._size[1]}, at least {MIN_WORKING_SIDE} px a side is needed); "
                             "fuse them unaligned")
        self._motion = ecc_motion(mode)
        self._changed = threading.Condition(threading.Lock())
        self._added: set[int] = set()
        self._frames: dict[int, Reduced | str] = {}  # added frames the chain may still need
        self._signatures: dict[int, np.ndarray] = {}  # usable frames not linked yet
        self._steps: dict[StepKey, object] = {}  # Step, or _STARTED while being computed
        self._chain = _Chain()
        self._error: BaseException | None = None

    @classmethod
    def _open_ended(cls, shape: tuple[int, int], *, reference: int | None = None, **options: object
                    ) -> AlignmentEstimator:
        """An estimator whose frame count is only known at the end (frames added in order; see :meth:`_close`)."""
        estimator = cls(1, shape, **options)  # type: ignore[arg-type]
        estimator._count, estimator._reference = None, reference
        return estimator

    def _close(self, count: int) -> None:
        """Fix the number of frames of an open-ended estimator (ValueError when it does not fit)."""
        with self._changed:
            if count < 1:
                raise ValueError("no frames to align")
            if self._added and max(self._added) >= count:
                raise ValueError(f"{len(self._added)} frames added, more than {count}")
            pick_reference(self._reference, count)
            self._count = count
            self._changed.notify_all()

    # ----------------------------------------------------------------------------------------
    # Adding frames

    def add(self, index: int, image: np.ndarray) -> None:
        """Frame ``index`` (HxW or HxWx3, uint8/uint16/float in 0..1): reduced to working resolution in the calling
        thread; the full image is not kept. Neighbour steps (index-1 -> index, index -> index+1) whose two frames are
        both present are submitted to ``executor`` (or computed in the caller's thread without one).

        Raises ValueError for an index out of range or added twice, a size that differs from
        ``shape``, or an unusable layout or pixel type; a frame that cannot be used for alignment
        (NaN/inf, no texture) is accepted and ends up with ``ok=False``.
        """
        self._check_index(index)
        image = check_frame(image, index)
        if image.shape[:2] != self._shape:
            raise ValueError(f"frame {index}: size {image.shape[1]}x{image.shape[0]} differs from frame 0's "
                             f"{self._shape[1]}x{self._shape[0]}")
        if self._mode == "none":
            self._record(index, None)
            return
        reduced = reduce_frame(image, index, self._size)
        del image
        self._run(self._record(index, reduced))
        self._advance()

    def _record(self, index: int, reduced: Reduced | str | None) -> list[tuple[StepKey, Reduced, Reduced]]:
        """Store an added frame; the neighbour steps that can start now."""
        with self._changed:
            if index in self._added:
                raise ValueError(f"frame {index} added twice")
            self._added.add(index)
            self._changed.notify_all()
            if reduced is None:
                return []
            self._frames[index] = reduced
            if isinstance(reduced, str):
                return []
            self._signatures[index] = reduced.signature
            return self._neighbour_jobs(index)

    def _check_index(self, index: int) -> None:
        """ValueError for an index that is not a frame of the stack."""
        if self._count is None:
            if index != len(self._added):
                raise ValueError(f"frame {index}: an open-ended estimator takes frames in order")
        elif not 0 <= index < self._count:
            raise ValueError(f"frame {index} out of range for {self._count} frames")

    def _neighbour_jobs(self, index: int) -> list[tuple[StepKey, Reduced, Reduced]]:
        """The steps between frame ``index`` and its neighbours that can start now (marked started; lock held)."""
        jobs = []
        for anchor, frame in ((index - 1, index), (index, index + 1)):
            key = (anchor, frame)
            first, second = self._frames.get(anchor), self._frames.get(frame)
            if isinstance(first, Reduced) and isinstance(second, Reduced) and key not in self._steps:
                self._steps[key] = _STARTED
                jobs.append((key, first, second))
        return jobs

    # ----------------------------------------------------------------------------------------
    # Steps and the chain

    def _run(self, jobs: list[tuple[StepKey, Reduced, Reduced]]) -> None:
        """Compute steps: on the executor (each then moves the chain on), or here, one after the other."""
        for key, anchor, frame in jobs:
            if self._executor is None:
                self._compute(key, anchor, frame)
            else:
                self._executor.submit(self._compute_and_advance, key, anchor, frame)

    def _compute(self, key: StepKey, anchor: Reduced, frame: Reduced) -> None:
        """Compute one step and store it (or the exception it raised)."""
        try:
            step: object = neighbour_step(anchor, frame, self._motion)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the result
            with self._changed:
                self._error = self._error or exc
                self._changed.notify_all()
            raise
        with self._changed:
            self._steps[key] = step
            self._changed.notify_all()

    def _compute_and_advance(self, key: StepKey, anchor: Reduced, frame: Reduced) -> None:
        """Executor task: one step, then as much of the chain as it allows. An error in either is handed to
        whoever waits for the result (an executor would otherwise keep it in a future nobody reads)."""
        self._compute(key, anchor, frame)
        try:
            self._advance()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the result
            with self._changed:
                self._error = self._error or exc
                self._changed.notify_all()
            raise

    def _step_to(self, frame: int) -> Callable[[int], Step | None]:
        """Lookup of the finished steps to ``frame`` (lock held while it is used)."""
        def lookup(anchor: int) -> Step | None:
            step = self._steps.get((anchor, frame))
            return step if isinstance(step, Step) else None
        return lookup

    def _advance(self) -> None:
        """Link frames in order as far as the finished steps allow; start the steps the chain needs next."""
        while True:
            with self._changed:
                jobs = self._link_ready()
            if not jobs:
                return
            self._run(jobs)
            if self._executor is not None:
                return

    def _link_ready(self) -> list[tuple[StepKey, Reduced, Reduced]]:
        """Link the next frames while their steps are known; the job for a missing step, if any (lock held)."""
        chain = self._chain
        while self._error is None:
            index = len(chain.links)
            if index not in self._added:
                return []
            entry = self._frames[index]
            if isinstance(entry, str):
                add_unusable(chain, index, entry)
            else:
                missing = add_frame(chain, index, self._signatures[index], self._step_to(index))
                if missing is not None:
                    key = (missing, index)
                    if key in self._steps:
                        return []  # being computed: its end moves the chain on
                    self._steps[key] = _STARTED
                    return [(key, self._frames[missing], entry)]  # type: ignore[list-item]
                del self._signatures[index]
            self._forget(index)
            self._changed.notify_all()
        return []

    def _forget(self, linked: int) -> None:
        """Drop the images and steps that no frame after ``linked`` can need (lock held)."""
        needed = self._chain.needed()
        for index in [index for index in self._frames if index <= linked and index not in needed]:
            del self._frames[index]
        for key in [key for key in self._steps if key[1] <= linked]:
            del self._steps[key]

    # ----------------------------------------------------------------------------------------
    # Waiting and the result

    @property
    def held_frames(self) -> int:
        """How many frames' working-resolution images are held (waiting for the chain, or still compared with)."""
        with self._changed:
            return len(self._frames)

    def linked(self) -> int:
        """How many frames, from frame 0 on, the chain has linked so far."""
        with self._changed:
            return len(self._chain.links)

    def wait_linked(self, count: int, timeout: float | None = None) -> int:
        """Wait until the chain has linked ``count`` frames (or ``timeout`` s passed); how many it has linked.

        Raises the exception a step raised, if any.
        """
        with self._changed:
            self._changed.wait_for(lambda: len(self._chain.links) >= count or self._error is not None, timeout)
            if self._error is not None:
                raise self._error
            return len(self._chain.links)

    def result(self, reread: Callable[[int], np.ndarray] | None = None,
               progress: Callable[[int, int], None] | None = None) -> StackAlignment:
        """Wait for all steps, build the chain, recover failed frames (reading them again with ``reread``; without it
        failed frames stay failed, as for a one-shot iterator today), snap near-identity results.

        Every frame must have been added (ValueError otherwise). ``progress(done, total)`` is
        called in this thread as the chain links frames. May be called more than once.
        """
        with self._changed:
            count = self._count if self._count is not None else len(self._added)
            missing = [index for index in range(count) if index not in self._added]
        chosen = pick_reference(self._reference, count)
        if self._mode == "none":
            return identity_alignment(count, self._shape, chosen)
        if missing:
            raise ValueError(f"frames never added: {', '.join(map(str, missing[:10]))}")
        self._wait_all(count, progress)
        links = copy.deepcopy(self._chain.links)
        if reread is not None:
            recover_failed(links, list(self._chain.signatures), self._rereader(reread), self._motion)
        to_small = resize_matrix(self._size[0] / self._shape[1], self._size[1] / self._shape[0])
        aligned = frame_alignments(links, chosen, to_small)
        return StackAlignment(chosen, [snap_to_identity(frame, self._shape) for frame in aligned], self._shape)

    def _wait_all(self, count: int, progress: Callable[[int, int], None] | None) -> None:
        """Wait until the chain has linked all ``count`` frames, reporting progress from this thread."""
        done = 0
        while done < count:
            linked = self.wait_linked(count if progress is None else done + 1)
            if progress is not None:
                for reached in range(done + 1, linked + 1):
                    progress(reached, count)
            done = linked

    def _rereader(self, reread: Callable[[int], np.ndarray]) -> Callable[[int], Reduced | str]:
        """Frame index -> the frame read again with ``reread`` and reduced, or why it cannot be used."""
        def reduced(index: int) -> Reduced | str:
            image = check_frame(reread(index), index)
            if image.shape[:2] != self._shape:
                return "size changed when read again"
            return reduce_frame(image, index, self._size)
        return reduced
