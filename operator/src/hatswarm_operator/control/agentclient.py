"""Talk to node agents through the generated `hatswarm.v1.AgentControl` stubs only.

One cached grpc.aio channel per agent address; every call has a deadline so a dead node costs
a probe interval, never a hung reconcile.

A pool with `spec.auth` gets a client of its own carrying the pool's `AgentCredentials`: the
bearer token goes out as `authorization: Bearer <token>` metadata on every call, and with TLS
the channels verify the agents against the pool's CA and present its certificate (mTLS).
Tokens rotate without a restart: the adapter hands the client the Secret's new value, and
until an agent has re-read its mounted file (the kubelet refreshes Secret volumes within a
minute or so) the client falls back to the previous token for that agent on UNAUTHENTICATED,
so a rotation never looks like a node failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from hatswarm_agent.protocol.auth import bearer_metadata
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc

from hatswarm_operator.control.credentials import AgentCredentials, Metadata

T = TypeVar("T")
STATUS_REQUEST = control_pb2.NodeStatusRequest()
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.enable_retries", 0),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class AgentClient:
    """The AgentControl calls, over one cached channel per agent, with the pool's credentials."""

    def __init__(
        self,
        timeout_s: float = 1.0,
        load_timeout_s: float = 120.0,
        credentials: AgentCredentials | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self._credentials = credentials or AgentCredentials()
        self._previous_token = ""
        self._accepted: dict[str, str] = {}  # address -> the token it last accepted
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, tuple[grpc.aio.Channel, control_pb2_grpc.AgentControlStub]] = {}

    # --- credentials -----------------------------------------------------------------------

    @property
    def credentials(self) -> AgentCredentials:
        return self._credentials

    async def set_credentials(self, credentials: AgentCredentials) -> None:
        """Use new credentials from the next call on; new channels only when TLS changed."""
        old = self._credentials
        if credentials == old:
            return
        if credentials.token != old.token:
            self._previous_token = old.token
        self._credentials = credentials
        if credentials.channel_key() != old.channel_key():
            await self.close()

    def _tokens(self, address: str) -> list[str]:
        """Tokens to try on `address`, best first: the one it last accepted, then the other."""
        current, previous = self._credentials.token, self._previous_token
        tokens = [current, previous] if previous and previous != current else [current]
        if self._accepted.get(address) == previous and len(tokens) == 2:
            tokens.reverse()
        return tokens

    async def _call(
        self,
        address: str,
        call: Callable[[control_pb2_grpc.AgentControlStub, Metadata], Awaitable[T]],
    ) -> T:
        stub = self._stub(address)
        tokens = self._tokens(address)
        for i, token in enumerate(tokens):
            try:
                result = await call(stub, bearer_metadata(token))
            except grpc.aio.AioRpcError as err:
                last = i == len(tokens) - 1
                if err.code() != grpc.StatusCode.UNAUTHENTICATED or last:
                    raise
                continue
            if token:
                self._accepted[address] = token
            return result
        raise AssertionError("unreachable: at least one token is always tried")

    def _stub(self, address: str) -> control_pb2_grpc.AgentControlStub:
        """The stub of the address's channel, built once per channel (a probe a second per
        agent: building a stub costs as much as a quarter of the call)."""
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = self._credentials.open_channel(address, CHANNEL_OPTIONS)
        cached = self._stubs.get(address)
        if cached is None or cached[0] is not ch:
            cached = self._stubs[address] = (ch, control_pb2_grpc.AgentControlStub(ch))
        return cached[1]

    # --- the control calls -------------------------------------------------------------------

    async def status(self, address: str) -> control_pb2.NodeStatusResponse:
        async def call(
            stub: control_pb2_grpc.AgentControlStub, md: Metadata
        ) -> control_pb2.NodeStatusResponse:
            resp: control_pb2.NodeStatusResponse = await stub.NodeStatus(
                STATUS_REQUEST, timeout=self.timeout_s, metadata=md or None
            )
            return resp

        return await self._call(address, call)

    async def load(
        self, address: str, req: control_pb2.LoadModelRequest
    ) -> control_pb2.ModelStatus:
        async def call(
            stub: control_pb2_grpc.AgentControlStub, md: Metadata
        ) -> control_pb2.ModelStatus:
            resp: control_pb2.ModelStatus = await stub.LoadModel(
                req, timeout=self.load_timeout_s, metadata=md
            )
            return resp

        return await self._call(address, call)

    async def unload(self, address: str, name: str, version: str) -> list[str]:
        async def call(stub: control_pb2_grpc.AgentControlStub, md: Metadata) -> list[str]:
            resp = await stub.UnloadModel(
                control_pb2.UnloadModelRequest(name=name, version=version),
                timeout=self.load_timeout_s,
                metadata=md,
            )
            return list(resp.unloaded_versions)

        return await self._call(address, call)

    async def set_routing(self, address: str, table: control_pb2.RoutingTable) -> int:
        async def call(stub: control_pb2_grpc.AgentControlStub, md: Metadata) -> int:
            resp = await stub.SetRoutingTable(table, timeout=self.timeout_s, metadata=md)
            return int(resp.generation)

        return await self._call(address, call)

    async def forget(self, address: str) -> None:
        self._accepted.pop(address, None)
        self._stubs.pop(address, None)
        ch = self._channels.pop(address, None)
        if ch is not None:
            await ch.close()

    async def close(self) -> None:
        for address in list(self._channels):
            await self.forget(address)
