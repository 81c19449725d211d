"""The routing seam: the table the operator pushes, and the hook the OIP servicer calls.

Routing itself (peers, capacity, cloud fallback, response cache) is a later issue; today the
agent stores the newest table and reports its generation, and the servicer asks the optional
`Router` before serving locally.
"""

from __future__ import annotations

from typing import Protocol

from hatswarm_agent.models import ModelVersion
from hatswarm_agent.v1 import control_pb2
from hatswarm_agent.v1 import grpc_predict_v2_pb2 as pb


class Router(Protocol):
    """Decides where a request runs. Returning None means: serve it here."""

    async def route(
        self, request: pb.ModelInferRequest, local: ModelVersion | None
    ) -> pb.ModelInferResponse | None: ...


class RoutingTableStore:
    """Keeps the newest routing table; older generations are ignored."""

    def __init__(self) -> None:
        self.table = control_pb2.RoutingTable()

    @property
    def generation(self) -> int:
        return self.table.generation

    def set(self, table: control_pb2.RoutingTable) -> int:
        """Adopt `table` unless it is older than the current one; returns the current generation."""
        if table.generation >= self.table.generation:
            self.table = table
        return self.table.generation
