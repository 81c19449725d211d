"""Loading and unloading model versions: fetch, verify, load, queue, health, assignment.

A model that fails to load is kept as FAILED with its reason (NodeStatus shows it) and the
others keep serving. Loads survive a cancelled LoadModel call (the operator's deadline) and
replacing a READY version keeps the old one serving until the new one is ready. Every
successful load or unload rewrites the assignment on disk. Downloads happen before the model's
lock is taken: a newer LoadModel of the same version (a different artifact) or an UnloadModel
cancels one still downloading, and the same LoadModel again joins it.

Control-plane loads are checked first (limits.py: every field and option in range;
sources.py: file roots, a digest, trusted signatures), so a refused load reads nothing and
leaves no state. FAILED entries are bounded (the oldest go first, and each expires after
`FAILED_TTL_S`) and their reasons cut short, so no caller can grow NodeStatus without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from hatswarm_agent.backends import (
    AUTO,
    Selection,
    artifact_format,
    canonical_name,
    create_backend,
    select_backend,
)
from hatswarm_agent.backends.base import (
    Backend,
    BackendError,
    BackendUnavailableError,
    DeviceInfo,
    LoadedModel,
)
from hatswarm_agent.backends.generation import GenerativeModel
from hatswarm_agent.backends.options import int_option
from hatswarm_agent.control.artifacts import (
    ArtifactError,
    ArtifactStore,
    downloads_failed,
    is_remote,
)
from hatswarm_agent.control.assignment import AssignmentStore
from hatswarm_agent.control.limits import (
    FAILED_TTL_S,
    MAX_FAILED_ENTRIES,
    check_load_request,
    short_reason,
)
from hatswarm_agent.control.signing import normalize_sha256
from hatswarm_agent.control.sources import ArtifactSources
from hatswarm_agent.protocol.defaults import ADAPTER_SLOTS
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.serving.adapters import AdapterSet
from hatswarm_agent.serving.batching import ModelQueue
from hatswarm_agent.serving.errors import AgentError, InvalidInputError, PreconditionError
from hatswarm_agent.serving.metrics import AgentMetrics
from hatswarm_agent.serving.registry import DEFAULT_VERSION, ModelRegistry, ModelVersion

log = logging.getLogger(__name__)

READY = control_pb2.MODEL_STATE_READY
FAILED = control_pb2.MODEL_STATE_FAILED


@dataclass(frozen=True)
class QueueDefaults:
    """Agent-wide defaults a LoadModel's options may override per model."""

    queue_limit: int = 256
    max_batch_size: int = 8
    max_queue_delay_us: int = 0


class Backends:
    """The node's backends, one instance per kind (an NPU is one device shared by its models).

    The default (`--backend`) is selected once, on first use (:func:`select_backend`): `auto`
    becomes hailo or onnxruntime; a pinned backend that cannot open leaves `problem` set, and
    every load that needs it fails with that reason while the agent keeps running.
    """

    def __init__(self, default: str, accelerator: str) -> None:
        self.requested = canonical_name(default)
        self.default = self.requested
        self.accelerator = accelerator
        self.selection: Selection | None = None
        self._backends: dict[str, Backend] = {}

    def select(self) -> Selection:
        """Open the default backend (once); the Selection says which and why."""
        if self.selection is None:
            self.selection = select_backend(self.requested, self.accelerator)
            if self.selection.backend is not None:
                self.default = self.selection.name
                self._backends[self.selection.name] = self.selection.backend
        return self.selection

    @property
    def problem(self) -> str:
        """Why the default backend cannot serve here ('' when it can, or is not opened yet)."""
        return "" if self.selection is None or self.selection.ready else self.selection.reason

    def for_load(self, request: control_pb2.LoadModelRequest) -> str:
        """The backend a load runs on: the one it names, else the default; an ONNX artifact
        on a Hailo node runs on onnxruntime (the NPU takes HEFs only), a GGUF file anywhere
        on llama.cpp."""
        if request.backend:
            return canonical_name(request.backend)
        if artifact_format(request.format, request.uri) == "gguf":
            return "llamacpp"
        default = self.select().name or self.requested
        if default == "hailo" and artifact_format(request.format, request.uri) == "onnx":
            return "onnxruntime"
        return default

    def get(self, name: str = "") -> Backend:
        canonical = canonical_name(name or self.default)
        if canonical in (AUTO, self.requested):
            selection = self.select()
            if selection.backend is None:
                raise BackendUnavailableError(selection.reason)
            canonical = selection.name if canonical == AUTO else canonical
        backend = self._backends.get(canonical)
        if backend is None:
            backend = create_backend(canonical, self.accelerator)
            self._backends[canonical] = backend
        return backend

    def device_info(self) -> DeviceInfo:
        """The default backend's device; a plain CPU when it cannot be created."""
        try:
            return self.get().device_info()
        except BackendError:
            return DeviceInfo(accelerator=self.accelerator)

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()


def inline_items(model: LoadedModel, options: Mapping[str, str]) -> int:
    """How many items may run on the event loop: those whose measured run time stays under
    `inline_max_us` (default 200 us, about the cost of the thread-pool round trip)."""
    latency = model.latency_s
    budget = int_option(options, "inline_max_us", 200) / 1e6
    if latency <= 0 or latency > budget:
        return 0
    return max(1, min(int(budget / latency), model.max_batch_size or 1))


def local_folder(uri: str) -> Path | None:
    """The folder a plain path or file:// URI names, None when it names anything else."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file":
        path = Path(urllib.parse.unquote(parts.path))
    elif "://" in uri:
        return None
    else:
        path = Path(uri).expanduser()
    return path.resolve() if path.is_dir() else None


def same_request(a: control_pb2.LoadModelRequest, b: control_pb2.LoadModelRequest) -> bool:
    """Whether a load asks for exactly what is already loaded (then it is a no-op)."""
    if a.sha256 and b.sha256:
        same_bytes = a.sha256.lower() == b.sha256.lower()
    else:
        same_bytes = a.uri == b.uri and a.sha256 == b.sha256
    return same_bytes and a.backend == b.backend and dict(a.options) == dict(b.options)


def _adapter_keys(request: control_pb2.LoadModelRequest) -> list[tuple[str, str, str]]:
    return [(a.name, a.uri, a.sha256.lower()) for a in request.adapters]


def check_adapters(request: control_pb2.LoadModelRequest) -> None:
    """Adapter names must be present and unique, and each needs a uri."""
    seen: set[str] = set()
    for a in request.adapters:
        if not a.name:
            raise InvalidInputError(f"LoadModel '{request.name}': an adapter has no name")
        if a.name in seen:
            raise InvalidInputError(f"LoadModel '{request.name}': adapter '{a.name}' given twice")
        if not a.uri:
            raise InvalidInputError(f"LoadModel '{request.name}': adapter '{a.name}' needs a uri")
        seen.add(a.name)


class LoadSupersededError(AgentError):
    """A load whose download a newer LoadModel or an UnloadModel of the model cancelled."""

    code = grpc.StatusCode.ABORTED
    reason = "superseded"


@dataclass(frozen=True)
class _PendingLoad:
    request: control_pb2.LoadModelRequest
    fetch: asyncio.Future[dict[str, ArtifactError]]
    task: asyncio.Task[ModelVersion]


def _same_load(a: control_pb2.LoadModelRequest, b: control_pb2.LoadModelRequest) -> bool:
    return same_request(a, b) and _adapter_keys(a) == _adapter_keys(b)


class ModelLifecycle:
    """Brings model versions in and out of service."""

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: AgentMetrics,
        artifacts: ArtifactStore,
        backends: Backends,
        health: health_aio.HealthServicer,
        *,
        assignment: AssignmentStore | None = None,
        defaults: QueueDefaults = QueueDefaults(),
        gateway: bool = False,
        sources: ArtifactSources,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`sources`: where control-plane loads may read artifacts from, whose signatures count."""
        self.registry = registry
        self.metrics = metrics
        self.artifacts = artifacts
        self.backends = backends
        self.health = health
        self.assignment = assignment
        self.defaults = defaults
        self.gateway = gateway
        self.sources = sources
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[ModelVersion]] = set()
        self._failed: dict[tuple[str, str], tuple[float, ModelVersion]] = {}
        self._pending: dict[tuple[str, str], _PendingLoad] = {}  # (name, version): the last load

    async def load(
        self,
        request: control_pb2.LoadModelRequest,
        persistent: bool = True,
        *,
        trusted: bool = False,
    ) -> ModelVersion:
        """Load one model version; the result is READY or FAILED with its reason.

        `trusted`: the request is the agent's own configuration (`--model`), not the control
        plane's, so its file may lie outside the file roots and it may come without a digest.
        """
        check_load_request(request)
        if self.gateway:
            raise PreconditionError("this agent is a gateway: it has no local backend")
        check_adapters(request)
        if not trusted:
            self.sources.check(request)
        key = (request.name, request.version or DEFAULT_VERSION)
        pending = self._pending.get(key)
        if pending is not None:
            if _same_load(pending.request, request):
                return await asyncio.shield(pending.task)  # a retry joins the load under way
            pending.fetch.cancel()  # superseded: its download stops (no-op once downloaded)
        pins: list[str] = []
        fetch: asyncio.Future[dict[str, ArtifactError]] = asyncio.ensure_future(
            self._download(request, pins, trusted)
        )
        task = asyncio.create_task(self._fetch_then_load(request, persistent, trusted, fetch, pins))
        mine = self._pending[key] = _PendingLoad(request, fetch, task)
        self._tasks.add(task)

        def done(t: asyncio.Task[ModelVersion]) -> None:
            self._tasks.discard(t)
            if self._pending.get(key) is mine:
                del self._pending[key]

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _fetch_then_load(
        self,
        request: control_pb2.LoadModelRequest,
        persistent: bool,
        trusted: bool,
        fetch: asyncio.Future[dict[str, ArtifactError]],
        pins: list[str],
    ) -> ModelVersion:
        """Download first, outside the name's lock (so a corrected LoadModel or an UnloadModel
        never waits on a slow server, and can cancel the download), then load from the cache.
        """
        try:
            try:
                failures = await fetch
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                version = request.version or DEFAULT_VERSION
                raise LoadSupersededError(
                    f"LoadModel of '{request.name}' version '{version}' was cancelled while "
                    "downloading: a newer LoadModel or an UnloadModel of it arrived"
                ) from None
            with downloads_failed(failures):  # what failed is not waited for again
                return await self._load(request, persistent, trusted)
        finally:
            for digest in pins:
                self.artifacts.unpin(digest)

    async def _download(
        self, request: control_pb2.LoadModelRequest, pins: list[str], trusted: bool
    ) -> dict[str, ArtifactError]:
        """Bring the request's http(s) artifacts into the cache (verified by digest, pinned in
        `pins` until the load took its own pins); what failed, by URI. Local files are not
        network waits: the load reads them."""
        failures: dict[str, ArtifactError] = {}
        wanted = [(request.uri, request.sha256)] + [(a.uri, a.sha256) for a in request.adapters]
        for uri, sha256 in wanted:
            if not is_remote(uri) or uri in failures:
                continue
            try:
                digest = normalize_sha256(sha256)
                fetched = uri if trusted else self.sources.confine(uri)
            except (ValueError, ArtifactError, InvalidInputError):
                continue  # the load reports it
            self.artifacts.pin(digest)
            pins.append(digest)
            try:
                await self.artifacts.fetch(fetched, sha256)
            except ArtifactError as exc:
                failures[fetched] = exc
        return failures

    def _cancel_downloads(self, name: str, version: str) -> None:
        """An UnloadModel cancels the downloads of the loads it makes moot."""
        for (n, v), pending in self._pending.items():
            if n == name and (not version or v == version):
                pending.fetch.cancel()

    async def _load(
        self, request: control_pb2.LoadModelRequest, persistent: bool, trusted: bool
    ) -> ModelVersion:
        name = request.name
        try:
            async with self._locks.setdefault(name, asyncio.Lock()):
                return await self._load_locked(request, persistent, trusted)
        finally:
            self._forget_lock(name)

    def _forget_lock(self, name: str) -> None:
        """Drop the per-name lock of a name nobody holds or waits for and nothing is loaded
        under, so bogus names leave nothing behind."""
        lock = self._locks.get(name)
        if lock is not None and not lock.locked() and name not in self.registry.names():
            del self._locks[name]

    def _record_failure(self, entry: ModelVersion) -> None:
        """Keep a FAILED entry visible, within bounds: at most MAX_FAILED_ENTRIES, each for at
        most FAILED_TTL_S (the oldest go first)."""
        now = self._clock()
        key = (entry.name, entry.version)
        self._failed.pop(key, None)
        self._failed[key] = (now, entry)
        self._prune_failed(now)

    def _prune_failed(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        while self._failed:
            key, (since, entry) = next(iter(self._failed.items()))
            if len(self._failed) <= MAX_FAILED_ENTRIES and now - since <= FAILED_TTL_S:
                break
            del self._failed[key]
            if self.registry.find(*key) is entry and not entry.ready:
                self.registry.remove(*key)
                self._forget_lock(key[0])
                if key[0] not in self.registry.names():
                    self._forget_health(key[0])

    def _forget_health(self, name: str) -> None:
        """Drop a forgotten name's health status (the servicer keeps every name it was told;
        it has no public way to forget one)."""
        statuses = getattr(self.health, "_server_status", None)
        if isinstance(statuses, dict):
            statuses.pop(name, None)

    def failed_count(self) -> int:
        self._prune_failed()
        return len(self._failed)

    async def _load_locked(
        self, request: control_pb2.LoadModelRequest, persistent: bool, trusted: bool
    ) -> ModelVersion:
        name, version = request.name, request.version or DEFAULT_VERSION
        existing = self.registry.find(name, version)
        if existing is not None and existing.ready and same_request(existing.request, request):
            # Same base: at most the adapter set changes (refused ones are retried).
            if _adapter_keys(existing.request) == _adapter_keys(request) and not (
                existing.adapter_refusals
            ):
                return existing
            await self._admit_adapters(existing, request.adapters, trusted)
            existing.request = request
            if persistent and existing.persistent:
                self._save()
            return existing
        entry = ModelVersion(
            name, version, request, backend=self.backends.for_load(request),
            persistent=persistent,
        )  # fmt: skip
        serving_old = existing is not None and existing.ready
        if not serving_old:
            self.registry.put(entry)  # visible as LOADING
        try:
            await self._bring_up(entry, trusted)
        except (ArtifactError, BackendError, InvalidInputError, OSError, ValueError) as exc:
            reason = short_reason(str(exc) or type(exc).__name__)
            entry.state, entry.reason = FAILED, reason
            log.warning("model %s/%s failed to load: %s", name, version, entry.reason)
            if not serving_old:
                self.registry.put(entry)
                self._record_failure(entry)
            await self._update_health(name)
            return entry
        self._failed.pop((name, version), None)
        self.registry.put(entry)
        if serving_old and existing is not None:
            await self._retire(existing)
        await self._update_health(name)
        if persistent:
            self._save()
        return entry

    async def _bring_up(self, entry: ModelVersion, trusted: bool) -> None:
        request = entry.request
        backend = self.backends.get(entry.backend)
        entry.backend = backend.name
        # Pin a known digest before fetching, so a concurrent eviction cannot take the file
        # between download and load; a failure releases it again.
        pinned = normalize_sha256(request.sha256) if request.sha256 else ""
        if pinned:
            self.artifacts.pin(pinned)
        # A model folder named on the command line (generative models are folders) loads in
        # place: a folder has no one digest to verify. Over LoadModel a folder comes as a
        # tarball with its sha256, through the artifact cache like any file.
        folder = None
        if trusted and not request.sha256 and not request.signature:
            folder = local_folder(request.uri)
        try:
            if folder is not None:
                path = load_path = folder
            else:
                if not trusted:  # the agent's trusted keys, never one the request brings
                    self.sources.verify_signature(request, pinned)
                uri = request.uri if trusted else self.sources.confine(request.uri)
                path = await self.artifacts.fetch(uri, request.sha256)
                # From a folder holding only this artifact: it cannot reach other cached files.
                load_path = self.artifacts.view(path)
            options = self._options(entry.name, request.options, request.uri)
            slots = int_option(options, "adapter_slots", ADAPTER_SLOTS, minimum=1)
            loop = asyncio.get_running_loop()
            model = await loop.run_in_executor(None, backend.load, load_path, options)
            try:
                adapters = AdapterSet(model, slots, entry.name, entry.version)
                queue = ModelQueue(
                    model,
                    limit=int_option(options, "queue_limit", self.defaults.queue_limit, minimum=1),
                    max_batch_size=model.max_batch_size,
                    max_queue_delay_s=int_option(options, "max_queue_delay_us", 0) / 1e6,
                    concurrency=max(1, model.concurrency),
                    on_execution=entry.on_execution,
                    name=entry.name,
                    inline_max_items=inline_items(model, options),
                    adapters=adapters,
                )
            except BaseException:
                model.close()
                raise
        except BaseException:
            if pinned:
                self.artifacts.unpin(pinned)
            raise
        entry.sha256 = path.name if folder is None else ""
        if not pinned and folder is None:
            self.artifacts.pin(entry.sha256)
        entry.model, entry.queue, entry.adapters = model, queue, adapters
        entry.active_watts = model.active_watts
        entry.metrics = self.metrics.model(entry.name, entry.version)
        entry.metrics.loaded.set(1)
        self.metrics.memory(entry.name, entry.version, model.memory_bytes)
        entry.metrics.queue_depth.set_function(lambda: queue.depth)
        if isinstance(model, GenerativeModel):
            entry.metrics.sequences.set_function(lambda: model.load().active_sequences)
            self.metrics.generation_status(
                entry.name, entry.version, lambda: entry.generation.status(model.load())
            )
        entry.loaded_at_unix_ms = int(time.time() * 1000)
        if request.adapters:
            await self._admit_adapters(entry, request.adapters, trusted)
        entry.state, entry.reason = READY, ""

    async def _admit_adapters(
        self,
        entry: ModelVersion,
        wanted: Sequence[control_pb2.AdapterArtifact],
        trusted: bool = False,
    ) -> None:
        """Fetch, verify and fit-check `wanted`, then make it the entry's adapter set.

        Each adapter is admitted or refused on its own (the reason shows in NodeStatus) and
        the base model keeps serving either way. Admitted adapters stay pinned in the artifact
        cache, so one evicted from its slot can always be reloaded from its verified file.
        """
        adapters = entry.adapters
        assert adapters is not None
        loop = asyncio.get_running_loop()
        old = adapters.paths()
        admitted: dict[str, Path] = {}
        refusals: dict[str, str] = {}
        for spec in wanted:
            digest = ""
            try:
                digest = normalize_sha256(spec.sha256) if spec.sha256 else ""
                if digest:
                    self.artifacts.pin(digest)
                uri = spec.uri if trusted else self.sources.confine(spec.uri)
                path = await self.artifacts.fetch(uri, spec.sha256)
                if path != old.get(spec.name):
                    await loop.run_in_executor(None, adapters.validate, path)
            except (ArtifactError, BackendError, InvalidInputError, OSError, ValueError) as exc:
                if digest:
                    self.artifacts.unpin(digest)
                refusals[spec.name] = short_reason(str(exc) or type(exc).__name__)
                log.warning(
                    "model %s/%s: adapter %s refused: %s",
                    entry.name, entry.version, spec.name, refusals[spec.name],
                )  # fmt: skip
                continue
            if not digest:
                self.artifacts.pin(path.name)
            admitted[spec.name] = path
        adapters.replace(admitted)
        for path in old.values():
            self.artifacts.unpin(path.name)
        entry.adapter_refusals = refusals

    def _options(self, name: str, requested: Mapping[str, str], uri: str = "") -> dict[str, str]:
        d = self.defaults
        return {
            "queue_limit": str(d.queue_limit),
            "max_batch_size": str(d.max_batch_size),
            "max_queue_delay_us": str(d.max_queue_delay_us),
            **requested,
            "model_name": name,
            "uri": uri,
        }

    async def unload(self, name: str, version: str = "") -> list[str]:
        """Unload one version (all when empty); unknown names unload nothing. A load of it
        still downloading is cancelled first."""
        self._cancel_downloads(name, version)
        async with self._locks.setdefault(name, asyncio.Lock()):
            removed = self.registry.remove(name, version)
            for entry in removed:
                self._failed.pop((entry.name, entry.version), None)
            for entry in removed:
                await self._retire(entry)
                self.metrics.forget(entry.name, entry.version)
            await self._update_health(name)
            if any(e.persistent for e in removed):
                self._save()
            return [e.version for e in removed]

    async def _retire(self, entry: ModelVersion) -> None:
        """Drain and close a version that left the registry (or was replaced)."""
        if entry.queue is not None:
            await entry.queue.close()
        if entry.model is not None:
            model = entry.model
            entry.model = None
            await asyncio.get_running_loop().run_in_executor(None, model.close)
        if entry.ready and entry.sha256:
            self.artifacts.unpin(entry.sha256)
        if entry.adapters is not None:
            for path in entry.adapters.paths().values():
                self.artifacts.unpin(path.name)
            entry.adapters.clear()

    async def _update_health(self, name: str) -> None:
        serving = bool(self.registry.ready_versions(name))
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(name, status)

    def _save(self) -> None:
        if self.assignment is None:
            return
        models = [e.request for e in self.registry.all() if e.persistent and e.ready]
        try:
            self.assignment.save(models)
        except OSError as exc:
            log.error(
                "could not save the assignment to %s (%s): the old file is removed so a restart "
                "does not bring back what it no longer lists; the control plane resends it",
                self.assignment.path, exc,
            )  # fmt: skip

    async def restore(self) -> list[ModelVersion]:
        """Reload the last saved assignment (offline autonomy after a restart)."""
        if self.assignment is None:
            return []
        loaded: list[ModelVersion] = []
        for request in self.assignment.load():
            try:
                loaded.append(await self.load(request))
            except Exception:
                log.exception("could not restore model %s", request.name)
        return loaded

    async def close(self) -> None:
        for entry in self.registry.all():
            await self._retire(entry)
        self.backends.close()
