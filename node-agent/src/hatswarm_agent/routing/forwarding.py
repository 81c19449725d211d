"""Requests leaving this node: to a peer (hedged past a latency percentile) or to the cloud.

A forwarded request goes as it came (tensors are never decoded on the way) with the hop marker,
the pool-internal peer credential (never the client's token) and the remaining deadline. What the peer's answer says updates what this agent
knows of it (latency, queue depth, failures and ejection: policy.PeerState); every answer says
where it ran (`hatswarm.node`, `hatswarm.route`).
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
    RETRYABLE_CODES,
    Balancer,
    CompiledTable,
    LatencyWindow,
    PeerState,
    VersionRoute,
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
    ) -> None:
        self.peers = peers
        self.cloud = cloud
        self.balancer = balancer
        self.metrics = metrics
        self.tokens = tokens
        self.latencies = LatencyWindow()
        self._on_done = on_done

    def _hop_metadata(self) -> Metadata:
        return HOP_METADATA + self.tokens.metadata() if self.tokens is not None else HOP_METADATA

    async def forward_hedged(
        self,
        peer: PeerState,
        request: pb.ModelInferRequest,
        route: VersionRoute | None,
        compiled: CompiledTable,
        deadline: float,
        exclude: set[str],
        policy: str,
        percentile: float,
    ) -> pb.ModelInferResponse:
        """`forward`, plus a second copy to another replica once the first is slower than
        `percentile` of recent forwards; the first answer wins, the other is cancelled."""
        after = self.latencies.percentile(percentile) if percentile > 0 else None
        if after is None or route is None or len(route.replicas) < 2:
            return await self.forward(peer, request, deadline)
        first = asyncio.ensure_future(self.forward(peer, request, deadline))
        done, _ = await asyncio.wait({first}, timeout=after)
        if done:
            return first.result()
        other, _ = self.balancer.choose(
            route.replicas, time.monotonic(), compiled.table.queue_limit, policy,
            exclude | {peer.address},
        )  # fmt: skip
        if other is None:
            return await first
        self.metrics.hedges.inc()
        second = asyncio.ensure_future(self.forward(other, request, deadline))
        pending = {first, second}
        error: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        return task.result()
                    error = task.exception()
            assert error is not None
            raise error
        finally:
            for task in pending:
                task.cancel()

    async def forward(
        self, peer: PeerState, request: pb.ModelInferRequest, deadline: float
    ) -> pb.ModelInferResponse:
        """One call to `peer`; AttemptFailedError with its status when it does not answer."""
        channel = self.peers.channel(peer.address)
        peer.outstanding += 1
        start = time.perf_counter()
        try:
            response = await channel.infer(
                request,
                timeout=max(0.001, deadline - time.monotonic()),
                metadata=self._hop_metadata(),
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
        finally:
            peer.outstanding -= 1
            self._on_done()
        elapsed = time.perf_counter() - start
        depth = params.pop_queue_depth(response)
        peer.on_success(elapsed, depth, time.monotonic())
        self.latencies.add(elapsed)
        node = params.answered_by(response, peer.node)
        self.metrics.requests.labels(request.model_name, ROUTE_PEER).inc()
        return params.tag(response, node, ROUTE_PEER)

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
            raise ForwardedError(exc.code(), f"cloud fallback: {exc.details()}") from None
        self.metrics.cloud_requests.labels(model).inc()
        cost = self.cloud.cost_usd()
        if cost:
            self.metrics.cloud_cost.labels(model).inc(cost)
        self.metrics.requests.labels(model, ROUTE_CLOUD).inc()
        params.pop_queue_depth(response)
        return params.tag(response, NODE_CLOUD, ROUTE_CLOUD)
