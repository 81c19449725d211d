"""hatswarm.v1.AgentControl: what the operator (or `hatswarm up`) asks of this agent.

Only the control plane's identity reaches these methods (protocol.auth.AuthInterceptor); what
it asks is still checked (lifecycle, limits, sources, routing.table) because it relays specs
that other people write.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hatswarm_agent import __version__
from hatswarm_agent.control.lifecycle import ModelLifecycle
from hatswarm_agent.control.statusfeed import StatusFeed, intervals
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.serving.errors import grpc_errors
from hatswarm_agent.serving.registry import node_generation


class RoutingTables(Protocol):
    """Where pushed routing tables go (routing.table.RoutingTableStore)."""

    @property
    def generation(self) -> int: ...

    def push(self, table: control_pb2.RoutingTable) -> int:
        """Validate `table` (INVALID_ARGUMENT when it is refused), adopt it unless it is older;
        returns the current generation."""
        ...


class CloudFigures(Protocol):
    """The cloud fallback's counters since the agent started (routing.cloud.CloudCounters)."""

    @property
    def requests(self) -> Mapping[str, int]: ...

    @property
    def failures(self) -> int: ...


@dataclass(frozen=True)
class NodeIdentity:
    node_name: str
    accelerator: str
    gateway: bool = False


CHECK_S = 1.0
"""A watched status is also compared this often (changes no control call announced: a FAILED
entry expiring, a backend opening)."""


class Changes:
    """Wakes every status stream when a control call changed something (load, unload, table)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Until the next change, or `seconds`."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


class ControlServicer(control_pb2_grpc.AgentControlServicer):
    """Load/unload, node status and the routing table."""

    def __init__(
        self,
        lifecycle: ModelLifecycle,
        routing: RoutingTables,
        identity: NodeIdentity,
        cloud: CloudFigures | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._routing = routing
        self._identity = identity
        self._cloud = cloud
        self._started = time.monotonic()
        self._changes = Changes()

    @grpc_errors
    async def LoadModel(  # noqa: N802
        self, request: control_pb2.LoadModelRequest, context: Any
    ) -> control_pb2.ModelStatus:
        self._changes.notify()  # LOADING is visible now
        try:
            entry = await self._lifecycle.load(request)
        finally:
            self._changes.notify()
        return entry.status()

    @grpc_errors
    async def UnloadModel(  # noqa: N802
        self, request: control_pb2.UnloadModelRequest, context: Any
    ) -> control_pb2.UnloadModelResponse:
        try:
            versions = await self._lifecycle.unload(request.name, request.version)
        finally:
            self._changes.notify()
        return control_pb2.UnloadModelResponse(unloaded_versions=versions)

    @grpc_errors
    async def NodeStatus(  # noqa: N802
        self, request: control_pb2.NodeStatusRequest, context: Any
    ) -> control_pb2.NodeStatusResponse:
        return await self._status()

    async def WatchNodeStatus(  # noqa: N802
        self, request: control_pb2.WatchNodeStatusRequest, context: Any
    ) -> AsyncIterator[control_pb2.NodeStatusUpdate]:
        """The status at once, then on change, live measurements at most every live interval,
        a heartbeat after the heartbeat interval of silence (statusfeed.StatusFeed decides)."""
        heartbeat_s, live_s = intervals(request)
        feed = StatusFeed(heartbeat_s, live_s)
        sequence = 0
        while True:
            status = await self._status()
            now = time.monotonic()
            if feed.status_due(status, now):
                sequence += 1
                yield control_pb2.NodeStatusUpdate(status=status, sequence=sequence)
            elif feed.heartbeat_due(now):
                sequence += 1
                yield control_pb2.NodeStatusUpdate(sequence=sequence)
            await self._changes.wait(min(CHECK_S, feed.next_due(time.monotonic())))

    async def _status(self) -> control_pb2.NodeStatusResponse:
        lc = self._lifecycle
        info = None
        backend = backend_error = ""
        if not self._identity.gateway:  # may block on the NPU: off the event loop
            info = await asyncio.get_running_loop().run_in_executor(None, lc.backends.device_info)
            selection = lc.backends.select()
            backend, backend_error = selection.name, lc.backends.problem
        temperature = info.temperature_c if info and info.temperature_c is not None else math.nan
        watts = info.watts if info and info.watts is not None else math.nan
        models = [e.status() for e in lc.registry.all()]
        generative = [m for m in models if m.HasField("generation")]
        return control_pb2.NodeStatusResponse(
            node_name=self._identity.node_name,
            accelerator=info.accelerator if info else self._identity.accelerator,
            device_id=info.device_id if info else "",
            agent_version=__version__,
            models=models,
            temperature_c=temperature,
            watts=watts,
            uptime_seconds=int(time.monotonic() - self._started),
            artifact_cache_bytes=lc.artifacts.total_bytes(),
            routing_generation=self._routing.generation,
            gateway=self._identity.gateway,
            now_unix_ms=int(time.time() * 1000),
            backend=backend,
            backend_error=backend_error,
            cloud_requests=dict(self._cloud.requests) if self._cloud is not None else {},
            cloud_failures=self._cloud.failures if self._cloud is not None else 0,
            generation=node_generation(generative) if generative else None,
            tokens=[
                control_pb2.TokenCount(model=model, kind=kind, where=where, tokens=n)
                for (model, kind, where), n in sorted(lc.metrics.tokens.totals.items())
            ],
        )

    @grpc_errors
    async def SetRoutingTable(  # noqa: N802
        self, request: control_pb2.RoutingTable, context: Any
    ) -> control_pb2.SetRoutingTableResponse:
        try:
            generation = self._routing.push(request)
        finally:
            self._changes.notify()
        return control_pb2.SetRoutingTableResponse(generation=generation)
