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
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
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
    """One grpc.aio channel to a peer and the calls made on it: ModelInfer, the health check,
    and the model readiness and metadata calls the pool answers for its peers' models."""

    def __init__(self, address: str, tls: TlsFiles | None) -> None:
        credentials = tls.channel_credentials() if tls is not None else None
        self.channel = open_channel(address, credentials, CHANNEL_OPTIONS)
        self.infer = infer_call(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.oip = pb_grpc.GRPCInferenceServiceStub(self.channel)


class Peers:
    """The peers of the current table: their state (policy.PeerState) and their channels."""

    def __init__(self, tls: TlsFiles | None, probe_interval_s: float) -> None:
        self.tls = tls
        self.probe_interval_s = probe_interval_s
        self.states: dict[str, PeerState] = {}
        self._channels: dict[str, PeerChannel] = {}
        self._probe_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def adopt(self, states: dict[str, PeerState], grace_s: float = 1.0) -> None:
        """A new table's peers: open channels to new addresses, close those that left.

        Calls still on a closing channel get `grace_s` (the request budget) to finish; any the
        close cancels are retried on another replica (forwarding.Forwarder.forward).
        """
        for address in set(self._channels) - set(states):
            self.close_later(self._channels.pop(address).channel, grace_s)
        for address in states:
            if address not in self._channels:
                self._channels[address] = PeerChannel(address, self.tls)
        self.states = states

    def channel(self, address: str) -> PeerChannel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = PeerChannel(address, self.tls)
        return channel

    def close_later(self, channel: grpc.aio.Channel, grace_s: float = 1.0) -> None:
        """Close `channel` in the background once calls still on it had `grace_s` to finish."""

        async def close() -> None:
            await channel.close(grace=grace_s)

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
        """Probe the ejected peers that are due, whatever the table does (it may never change
        again): a peer that was frozen or restarted comes back as soon as it answers."""
        while True:
            await asyncio.sleep(self.probe_interval_s)
            now = time.monotonic()
            due = [p for p in self.states.values() if p.ejected and now >= p.ejected_until]
            if due:
                await asyncio.gather(*(self._probe(p) for p in due))

    async def _probe(self, peer: PeerState) -> None:
        """One health check; any failure (a status, a closed channel) leaves it ejected."""
        healthy = False
        try:
            reply = await self.channel(peer.address).health.Check(
                health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT_S
            )
            healthy = reply.status == health_pb2.HealthCheckResponse.SERVING
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception as exc:  # the loop must outlive any one probe
            log.debug("probe of %s: %s", peer.node, exc)
        peer.on_probe(healthy, time.monotonic())
        if healthy:
            log.warning("peer %s readmitted", peer.node)
