"""LoRA adapters beside a base model: which ones a model version knows and which are resident.

The tiered-model pattern: one base model on the node, many small adapters that personalise it,
chosen per request (OIP request parameter `adapter`). An adapter is an artifact like any other
(fetched, sha256-verified and pinned in the ArtifactStore by the lifecycle); here a model version
only keeps its verified file path. At most `slots` adapters are resident (loaded by the backend)
per model version; using another one evicts the least recently used, which is reloaded from
its cached file on its next use. Requests of different adapters are never batched together
(batching.py); a request without an adapter runs the base model.

`AdapterSet.run` is called from the batcher's worker threads, so residency is guarded by a
lock. A batch already running with an adapter keeps its handle alive after an eviction, so
up to `slots + workers - 1` adapters can be in memory for a moment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from hatswarm_agent.backends.base import AdapterModel, Array, BackendError, LoadedModel
from hatswarm_agent.serving.errors import UnknownAdapterError


class AdapterSet:
    """The adapters one model version knows (name -> verified file) and the resident few."""

    def __init__(self, model: LoadedModel, slots: int, name: str, version: str) -> None:
        if slots < 1:
            raise ValueError("an adapter set needs at least one slot")
        self._model = model
        self.slots = slots
        self._model_name, self._version = name, version
        self._paths: dict[str, Path] = {}
        self._resident: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # backend loads, first ones and reloads after an eviction
        self.evictions = 0
        self.requests: dict[str, int] = {}  # per adapter since load: its measured share

    @property
    def backend_model(self) -> AdapterModel:
        """The model as an adapter runner; BackendError when its backend has no adapters."""
        model = self._model
        if not isinstance(model, AdapterModel):
            raise BackendError(f"this backend cannot run LoRA adapters ({type(model).__name__})")
        return model

    def names(self) -> list[str]:
        """Adapters a request may name, in the order they were admitted."""
        return list(self._paths)

    def paths(self) -> dict[str, Path]:
        return dict(self._paths)

    def resident(self) -> list[str]:
        """Loaded adapters, least recently used first."""
        with self._lock:
            return list(self._resident)

    def check(self, adapter: str) -> None:
        """NOT_FOUND naming the adapter and model when `adapter` is not known."""
        if adapter not in self._paths:
            raise UnknownAdapterError(adapter, self._model_name, self._version, self._paths)

    def count(self, adapter: str) -> None:
        """One request for `adapter` (event loop): the per-adapter request counters."""
        self.requests[adapter] = self.requests.get(adapter, 0) + 1

    def validate(self, path: Path) -> None:
        """Load a file once to check it fits the model (blocking); it is not kept resident."""
        self.backend_model.load_adapter(path)

    def replace(self, paths: Mapping[str, Path]) -> None:
        """Make `paths` the known set; resident adapters that left (or changed file) unload."""
        with self._lock:
            old, self._paths = self._paths, dict(paths)
            for name in list(self._resident):
                if self._paths.get(name) != old.get(name):
                    del self._resident[name]

    def acquire(self, adapter: str) -> object:
        """The loaded adapter, loading it (and evicting the least recently used) if needed."""
        with self._lock:
            handle = self._resident.get(adapter)
            if handle is not None:
                self._resident.move_to_end(adapter)
                return handle
            path = self._paths.get(adapter)
            if path is None:
                self.check(adapter)
            assert path is not None
            handle = self.backend_model.load_adapter(path)
            self.loads += 1
            self._resident[adapter] = handle
            while len(self._resident) > self.slots:
                self._resident.popitem(last=False)
                self.evictions += 1
            return handle

    def run(self, inputs: Mapping[str, Array], adapter: str) -> dict[str, Array]:
        """Run the base model with `adapter`'s parameters (blocking; a worker thread)."""
        handle = self.acquire(adapter)
        return self.backend_model.run_adapter(inputs, handle)

    def clear(self) -> None:
        with self._lock:
            self._resident.clear()
            self._paths = {}
