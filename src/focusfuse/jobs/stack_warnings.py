"""A batch stack's warnings, collected where it runs (here or on a Dask worker) for its entry and its sidecar."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_ONE_AT_A_TIME = threading.Lock()  # Python's warning filters and hook are process-wide
REPEATED = ("default", "once", "module")  # filter actions that show a warning only the first time


@contextmanager
def collected_warnings() -> Iterator[list[str]]:
    """The texts of the warnings raised in the block (by any thread of this process), each once, in order.

    A stack's own reading threads warn too, so every thread's warnings count. The filters in force still
    apply ("ignore" hides a warning, "error" raises it), except that a warning an earlier stack raised too is
    collected again. If the block raises, what it collected is raised as warnings before the error goes on.
    Python's warning state is process-wide: where another block of this kind is already collecting (a Dask
    worker running several stacks at once in threads), this one yields an empty list and that block collects
    its warnings too.
    """
    if not _ONE_AT_A_TIME.acquire(blocking=False):
        yield []
        return
    texts: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.filters[:] = [("always", *rule[1:]) if rule[0] in REPEATED else rule for rule in warnings.filters]
            warnings.simplefilter("always", append=True)  # what no filter names (also marks the filters changed)
            try:
                yield texts
            finally:
                for record in caught:
                    text = str(record.message).strip()
                    if text and text not in texts:
                        texts.append(text)
    except BaseException:
        with contextlib.suppress(Warning):  # an "error" filter must not hide the error itself
            warn_for_stack(None, texts)
        raise
    finally:
        _ONE_AT_A_TIME.release()


def warn_for_stack(name: str | None, texts: list[str]) -> None:
    """Raise collected warnings in this process (as UserWarning), named by their stack when ``name`` is given
    (``s1: z0.tif: ...``)."""
    for text in texts:
        warnings.warn(f"{name}: {text}" if name else text, UserWarning, stacklevel=3)
