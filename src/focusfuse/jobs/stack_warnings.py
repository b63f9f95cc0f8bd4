"""A batch stack's warnings, collected where it runs (here or on a Dask worker) for its entry and its sidecar."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_ONE_AT_A_TIME = threading.Lock()  # Python's warning filters and hook are process-wide


@contextmanager
def collected_warnings() -> Iterator[list[str]]:
    """The texts of the warnings raised in the block (by any thread of this process), each once, in order.

    A stack's own reading threads warn too, so every thread's warnings count. Python's warning state is
    process-wide: where another block of this kind is already collecting (a Dask worker running several
    stacks at once in threads), this one yields an empty list and that block collects its warnings too.
    """
    if not _ONE_AT_A_TIME.acquire(blocking=False):
        yield []
        return
    texts: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # a stack's warning counts even if an earlier stack raised it too
            yield texts
            for record in caught:
                text = str(record.message).strip()
                if text and text not in texts:
                    texts.append(text)
    finally:
        _ONE_AT_A_TIME.release()


def warn_for_stack(name: str, texts: list[str]) -> None:
    """Raise a stack's collected warnings in this process, each named by its stack (``s1: z0.tif: ...``)."""
    for text in texts:
        warnings.warn(f"{name}: {text}", UserWarning, stacklevel=3)
