"""Talk to node agents through the generated `hatswarm.v1.AgentControl` stubs only.

One cached grpc.aio channel per agent address; every call has a deadline so a dead node costs
a probe interval, never a hung reconcile.
"""

from __future__ import annotations

import grpc
from hatswarm_agent.v1 import control_pb2, control_pb2_grpc


class AgentClient:
    def __init__(self, timeout_s: float = 1.0, load_timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> control_pb2_grpc.AgentControlStub:
        ch = self._channels.get(address)
        if ch is None:
            ch = grpc.aio.insecure_channel(
                address,
                options=[("grpc.enable_retries", 0), ("grpc.max_reconnect_backoff_ms", 1000)],
            )
            self._channels[address] = ch
        return control_pb2_grpc.AgentControlStub(ch)

    async def status(self, address: str) -> control_pb2.NodeStatusResponse:
        resp: control_pb2.NodeStatusResponse = await self._stub(address).NodeStatus(
            control_pb2.NodeStatusRequest(), timeout=self.timeout_s
        )
        return resp

    async def load(
        self, address: str, req: control_pb2.LoadModelRequest
    ) -> control_pb2.ModelStatus:
        resp: control_pb2.ModelStatus = await self._stub(address).LoadModel(
            req, timeout=self.load_timeout_s
        )
        return resp

    async def unload(self, address: str, name: str, version: str) -> list[str]:
        resp = await self._stub(address).UnloadModel(
            control_pb2.UnloadModelRequest(name=name, version=version), timeout=self.load_timeout_s
        )
        return list(resp.unloaded_versions)

    async def set_routing(self, address: str, table: control_pb2.RoutingTable) -> int:
        resp = await self._stub(address).SetRoutingTable(table, timeout=self.timeout_s)
        return int(resp.generation)

    async def forget(self, address: str) -> None:
        ch = self._channels.pop(address, None)
        if ch is not None:
            await ch.close()

    async def close(self) -> None:
        for address in list(self._channels):
            await self.forget(address)
