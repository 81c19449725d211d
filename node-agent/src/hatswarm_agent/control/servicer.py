"""hatswarm.v1.AgentControl: what the operator (or `hatswarm up`) asks of this agent.

Only the control plane's identity reaches these methods (protocol.auth.AuthInterceptor); what
it asks is still checked (lifecycle, limits, sources, routing.table) because it relays specs
that other people write.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from hatswarm_agent import __version__
from hatswarm_agent.control.lifecycle import ModelLifecycle
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.serving.errors import grpc_errors


class RoutingTables(Protocol):
    """Where pushed routing tables go (routing.table.RoutingTableStore)."""

    @property
    def generation(self) -> int: ...

    def push(self, table: control_pb2.RoutingTable) -> int:
        """Validate `table` (INVALID_ARGUMENT when it is refused), adopt it unless it is older;
        returns the current generation."""
        ...


@dataclass(frozen=True)
class NodeIdentity:
    node_name: str
    accelerator: str
    gateway: bool = False


class ControlServicer(control_pb2_grpc.AgentControlServicer):
    """Load/unload, node status and the routing table."""

    def __init__(
        self, lifecycle: ModelLifecycle, routing: RoutingTables, identity: NodeIdentity
    ) -> None:
        self._lifecycle = lifecycle
        self._routing = routing
        self._identity = identity
        self._started = time.monotonic()

    @grpc_errors
    async def LoadModel(  # noqa: N802
        self, request: control_pb2.LoadModelRequest, context: Any
    ) -> control_pb2.ModelStatus:
        entry = await self._lifecycle.load(request)
        return entry.status()

    @grpc_errors
    async def UnloadModel(  # noqa: N802
        self, request: control_pb2.UnloadModelRequest, context: Any
    ) -> control_pb2.UnloadModelResponse:
        versions = await self._lifecycle.unload(request.name, request.version)
        return control_pb2.UnloadModelResponse(unloaded_versions=versions)

    @grpc_errors
    async def NodeStatus(  # noqa: N802
        self, request: control_pb2.NodeStatusRequest, context: Any
    ) -> control_pb2.NodeStatusResponse:
        lc = self._lifecycle
        info = None
        backend = backend_error = ""
        if not self._identity.gateway:  # may block on the NPU: off the event loop
            info = await asyncio.get_running_loop().run_in_executor(None, lc.backends.device_info)
            selection = lc.backends.select()
            backend, backend_error = selection.name, lc.backends.problem
        temperature = info.temperature_c if info and info.temperature_c is not None else math.nan
        watts = info.watts if info and info.watts is not None else math.nan
        return control_pb2.NodeStatusResponse(
            node_name=self._identity.node_name,
            accelerator=info.accelerator if info else self._identity.accelerator,
            device_id=info.device_id if info else "",
            agent_version=__version__,
            models=[e.status() for e in lc.registry.all()],
            temperature_c=temperature,
            watts=watts,
            uptime_seconds=int(time.monotonic() - self._started),
            artifact_cache_bytes=lc.artifacts.total_bytes(),
            routing_generation=self._routing.generation,
            gateway=self._identity.gateway,
            now_unix_ms=int(time.time() * 1000),
            backend=backend,
            backend_error=backend_error,
        )

    @grpc_errors
    async def SetRoutingTable(  # noqa: N802
        self, request: control_pb2.RoutingTable, context: Any
    ) -> control_pb2.SetRoutingTableResponse:
        return control_pb2.SetRoutingTableResponse(generation=self._routing.push(request))
