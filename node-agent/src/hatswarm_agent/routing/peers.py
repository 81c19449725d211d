"""Channels to the pool's peers, kept in step with the routing table, and the ejected peers' probes.

One grpc.aio channel per peer address (TLS with this agent's own certificate when it has one),
carrying the two calls made on peers: ModelInfer for forwarded requests and the health check
that readmits a peer consecutive failures ejected (policy.PeerState). Channels of peers that
left the table close in the background, after a grace period for calls still on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hatswarm_agent.protocol.auth import TlsFiles, open_channel
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import INFER_METHOD
from hatswarm_agent.routing.policy import PeerState

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 0),
]
PROBE_TIMEOUT_S = 1.0


def infer_call(channel: grpc.aio.Channel) -> Any:
    """ModelInfer on `channel`, parsed request in, parsed response out (tensors untouched)."""
    return channel.unary_unary(
        INFER_METHOD,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


class PeerChannel:
    """One grpc.aio channel to a peer and the two calls made on it."""

    def __init__(self, address: str, tls: TlsFiles | None) -> None:
        credentials = tls.channel_credentials() if tls is not None else None
        self.channel = open_channel(address, credentials, CHANNEL_OPTIONS)
        self.infer = infer_call(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)


class Peers:
    """The peers of the current table: their state (policy.PeerState) and their channels."""

    def __init__(self, tls: TlsFiles | None, probe_interval_s: float) -> None:
        self.tls = tls
        self.probe_interval_s = probe_interval_s
        self.states: dict[str, PeerState] = {}
        self._channels: dict[str, PeerChannel] = {}
        self._probe_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def adopt(self, states: dict[str, PeerState]) -> None:
        """A new table's peers: open channels to new addresses, close those that left."""
        for address in set(self._channels) - set(states):
            self.close_later(self._channels.pop(address).channel)
        for address in states:
            if address not in self._channels:
                self._channels[address] = PeerChannel(address, self.tls)
        self.states = states

    def channel(self, address: str) -> PeerChannel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = PeerChannel(address, self.tls)
        return channel

    def close_later(self, channel: grpc.aio.Channel) -> None:
        """Close `channel` in the background once calls still on it had a second to finish."""

        async def close() -> None:
            await channel.close(grace=1.0)

        with contextlib.suppress(RuntimeError):  # no running loop: nothing in flight either
            task = asyncio.get_running_loop().create_task(close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._probe_task = asyncio.create_task(self._probe_loop(), name="peer-probes")

    async def stop(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        for ch in self._channels.values():
            await ch.channel.close()
        self._channels.clear()

    # -- ejected peers --------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            now = time.monotonic()
            due = [p for p in self.states.values() if p.ejected and now >= p.ejected_until]
            if due:
                await asyncio.gather(*(self._probe(p) for p in due))

    async def _probe(self, peer: PeerState) -> None:
        channel = self._channels.get(peer.address)
        healthy = False
        if channel is not None:
            try:
                reply = await channel.health.Check(
                    health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT_S
                )
                healthy = reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                healthy = False
        peer.on_probe(healthy, time.monotonic())
        if healthy:
            log.warning("peer %s readmitted", peer.node)
