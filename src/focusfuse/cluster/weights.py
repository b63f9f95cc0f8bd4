"""The method's weights on every worker: loaded once per worker process (a Dask worker plugin), on its device."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from distributed import WorkerPlugin, get_worker


class MethodWeights(WorkerPlugin):
    """Carries a method's weights (on the host) to each worker, which loads them onto its own device at setup;
    workers that join later (a replaced worker) get them too."""

    def __init__(self, method: str, weights: Any, device: str) -> None:
        self.method, self.device = method, device
        on_host = weights is None or weights.device.type == "cpu"
        self.weights = weights if on_host else copy.deepcopy(weights).cpu()
        self.model: Any = None
        self.name = f"focusfuse-weights-{method}-{uuid.uuid4().hex[:12]}"

    def setup(self, worker: Any) -> None:
        from ..backends.select import resolve_device
        from ..methods.registry import load_method_weights

        self.model = load_method_weights(self.method, self.weights, resolve_device(self.device))


def worker_weights(name: str) -> Any:
    """In a task: the weights the plugin ``name`` loaded on this worker (None for a method without weights)."""
    return get_worker().plugins[name].model


def register_weights(client: Any, method: str, weights: Any, device: str) -> str:
    """Register the weights on every worker of ``client`` (now and later ones); returns the plugin's name."""
    plugin = MethodWeights(method, weights, str(device))
    client.register_plugin(plugin, name=plugin.name)
    return plugin.name


def unregister_weights(client: Any, name: str) -> None:
    """Drop the plugin ``name`` (the workers free the weights); a cluster already gone is not an error."""
    try:
        client.unregister_worker_plugin(name)
    except Exception:  # noqa: BLE001 - tidying up only
        pass


__all__ = ["MethodWeights", "worker_weights", "register_weights", "unregister_weights"]
