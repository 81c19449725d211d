"""Requests leaving this node: one call to a peer, or to the cloud.

A forwarded request goes as it came (tensors are never decoded on the way) with the hop marker,
the pool-internal peer credential (never the client's token) and the remaining deadline. What
the peer's answer says updates what this agent knows of it (latency, queue depth, failures,
timeouts and ejection: policy.PeerState); every answer says where it ran (`hatswarm.node`,
`hatswarm.route`). How long an attempt may take before another replica is asked (and the
hedging threshold) is decided here from what the forwards measured; attempts.py runs the
attempts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.auth import Metadata, MetadataSource
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import HOP_METADATA, NODE_CLOUD, ROUTE_CLOUD, ROUTE_PEER
from hatswarm_agent.routing.cloud import CloudTarget
from hatswarm_agent.routing.peers import Peers
from hatswarm_agent.routing.policy import (
    ATTEMPT_FACTOR,
    ATTEMPT_MIN_S,
    RETRYABLE_CODES,
    TAIL_PERCENTILE,
    Balancer,
    LatencyWindow,
    PeerState,
    attempt_timeout,
)
from hatswarm_agent.serving.errors import ForwardedError
from hatswarm_agent.serving.metrics import RouteMetrics

log = logging.getLogger(__name__)


class AttemptFailedError(Exception):
    """A forwarded call that did not succeed: its status, and whether another replica may try."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.code.name in RETRYABLE_CODES


def _being_cancelled() -> bool:
    """Whether the running task itself is being cancelled (not a call cancelled under it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Forwarder:
    """Sends requests to peers and to the cloud fallback; `on_done` hears each peer call end."""

    def __init__(
        self,
        peers: Peers,
        cloud: CloudTarget,
        balancer: Balancer,
        metrics: RouteMetrics,
        on_done: Callable[[], None],
        tokens: MetadataSource | None = None,
        *,
        attempt_factor: float = ATTEMPT_FACTOR,
        attempt_floor_s: float = ATTEMPT_MIN_S,
    ) -> None:
        self.peers = peers
        self.cloud = cloud
        self.balancer = balancer
        self.metrics = metrics
        self.tokens = tokens
        self.latencies = LatencyWindow()
        self.attempt_factor = attempt_factor
        self.attempt_floor_s = attempt_floor_s
        self._on_done = on_done

    def hop_metadata(self) -> Metadata:
        """The hop marker and the pool token: what every call to a peer carries."""
        return HOP_METADATA + self.tokens.metadata() if self.tokens is not None else HOP_METADATA

    def attempt_timeout(self, peer: PeerState) -> float:
        """Seconds one attempt on `peer` may take before another replica is asked."""
        return attempt_timeout(
            peer,
            self.latencies.percentile(TAIL_PERCENTILE),
            self.attempt_factor,
            self.attempt_floor_s,
        )

    def hedge_after(self, percentile: float) -> float | None:
        """The hedging threshold: `percentile` of recent forwards (None: off or too few)."""
        return self.latencies.percentile(percentile) if percentile > 0 else None

    def timed_out(self, peer: PeerState, seconds: float) -> None:
        """An attempt on `peer` outlived its timeout: counts toward ejection like an error."""
        self.metrics.attempt_timeouts.labels(peer.node).inc()
        if peer.on_failure(time.monotonic()):
            self.metrics.ejections.labels(peer.node).inc()
            log.warning("peer %s ejected: no answer within %.0f ms", peer.node, seconds * 1000)

    async def forward(
        self, peer: PeerState, request: pb.ModelInferRequest, deadline: float
    ) -> pb.ModelInferResponse:
        """One call to `peer`; AttemptFailedError with its status when it does not answer.

        A call the channel cancels under us (the peer left the table and its channel closed)
        or a closed channel is UNAVAILABLE: another replica may answer. Only the cancellation
        of this task itself (the caller gave up, or a hedge won) propagates.
        """
        channel = self.peers.channel(peer.address)
        peer.outstanding += 1
        start = time.perf_counter()
        try:
            response = await channel.infer(
                request,
                timeout=max(0.001, deadline - time.monotonic()),
                metadata=self.hop_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            now = time.monotonic()
            code = exc.code()
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                peer.on_exhausted(now)
            elif (
                code.name in RETRYABLE_CODES
                and code != grpc.StatusCode.NOT_FOUND
                and peer.on_failure(now)
            ):
                self.metrics.ejections.labels(peer.node).inc()
                log.warning("peer %s ejected after repeated failures", peer.node)
            raise AttemptFailedError(code, f"{peer.node}: {exc.details()}") from None
        except asyncio.CancelledError:
            if _being_cancelled():
                raise
            raise AttemptFailedError(
                grpc.StatusCode.UNAVAILABLE, f"{peer.node}: call cancelled (its channel closed)"
            ) from None
        except grpc.aio.UsageError as exc:  # the channel closed before the call started
            raise AttemptFailedError(
                grpc.StatusCode.UNAVAILABLE, f"{peer.node}: channel closed ({exc})"
            ) from None
        finally:
            peer.outstanding -= 1
            self._on_done()
        elapsed = time.perf_counter() - start
        depth = params.pop_queue_depth(response)
        peer.on_success(elapsed, depth, time.monotonic())
        self.latencies.add(elapsed)
        node = params.answered_by(response, peer.node)
        self.metrics.requests.labels(request.model_name, ROUTE_PEER).inc()
        # The peer may have sent it on to the cloud (a generation's prompt over its context):
        # the answer says so, not that a node of the pool ran it.
        route = ROUTE_CLOUD if params.route_of(response) == ROUTE_CLOUD else ROUTE_PEER
        return params.tag(response, node, route)

    async def to_cloud(
        self, request: pb.ModelInferRequest, deadline: float
    ) -> pb.ModelInferResponse:
        """The cloud fallback's answer (the caller checked its share); its status otherwise."""
        model = request.model_name
        self.cloud.window.sent()
        try:
            response = await self.cloud.call()(
                request,
                timeout=max(0.001, deadline - time.monotonic()),
                metadata=HOP_METADATA + self.cloud.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            self.cloud.counters.failures += 1
            raise ForwardedError(exc.code(), f"cloud fallback: {exc.details()}") from None
        self.metrics.cloud_requests.labels(model).inc()
        cost = self.cloud.cost_usd()
        self.cloud.counters.answered(model, cost)
        if cost:
            self.metrics.cloud_cost.labels(model).inc(cost)
        self.metrics.requests.labels(model, ROUTE_CLOUD).inc()
        params.pop_queue_depth(response)
        return params.tag(response, NODE_CLOUD, ROUTE_CLOUD)
