"""The method's weights on every worker: loaded once per worker process (a Dask worker plugin), on its device."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import WorkerPlugin, get_worker

from ..errors import WeightsError


class MethodWeights(WorkerPlugin):
    """Carries a method's weights (on the host) to each worker, which loads them onto its own device at setup;
    workers that join later (a replaced worker) get them too. A worker that cannot load them keeps the reason,
    and its tasks fail with it (instead of running with other weights)."""

    def __init__(self, method: str, weights: Any, device: str) -> None:
        self.method, self.device = method, device
        on_host = weights is None or weights.device.type == "cpu"
        self.weights = weights if on_host else copy.deepcopy(weights).cpu()
        self.model: Any = None
        self.problem: str | None = None

    def setup(self, worker: Any) -> None:
        from ..backends.select import resolve_device
        from ..methods.registry import load_method_weights

        try:
            self.model = load_method_weights(self.method, self.weights, resolve_device(self.device))
        except Exception as exc:  # noqa: BLE001 - reported by every task that needs the weights
            self.problem = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def worker_weights(name: str) -> Any:
    """In a task: the weights the plugin ``name`` loaded on this worker (None for a method without weights)."""
    worker = get_worker()
    plugin = worker.plugins.get(name)
    if plugin is None:
        raise WeightsError(f"worker {worker.address} has no weights for this run (plugin {name} missing)")
    if plugin.problem is not None:
        raise WeightsError(f"worker {worker.address} could not load the weights on {plugin.device}: {plugin.problem}")
    return plugin.model


@contextmanager
def weights_on_workers(client: Any, method: str, weights: Any, device: str) -> Iterator[str]:
    """The weights registered on every worker of ``client`` (now and later ones) for the block; yields the
    plugin's name, which tasks pass to :func:`worker_weights`. The plugin is removed at the end."""
    name = f"focusfuse-weights-{method}-{uuid.uuid4().hex[:12]}"
    try:
        client.register_plugin(MethodWeights(method, weights, str(device)), name=name)
        yield name
    finally:
        try:
            client.unregister_worker_plugin(name)
        except Exception:  # noqa: BLE001 - tidying up only: never registered, or the cluster is gone
            pass


__all__ = ["MethodWeights", "worker_weights", "weights_on_workers"]
