"""One request's attempts across the pool: this node first, then peers, then the cloud.

This node serves a request when it has the version and room in its queue (and, for a LoRA
adapter, has it loaded or a free slot for it, unless no peer does better); else the peer the
policy picks (policy.py). A peer that refuses, times out or dies is retried on another replica
within the retry budget and the deadline (inference is idempotent). When the pool is saturated
low priorities are shed and high ones wait for capacity; when it cannot serve at all the
cloud fallback may, within its share.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import ADAPTER_PARAM, ROUTE_LOCAL
from hatswarm_agent.routing.cloud import CloudTarget
from hatswarm_agent.routing.config import DispatchConfig
from hatswarm_agent.routing.forwarding import AttemptFailedError, Forwarder
from hatswarm_agent.routing.policy import (
    ADAPTER_CANNOT,
    ADAPTER_FREE_SLOT,
    Balancer,
    CompiledTable,
    Replica,
    VersionRoute,
    WaitingLine,
    adapter_score,
    should_shed,
)
from hatswarm_agent.serving.dataplane import DataPlane
from hatswarm_agent.serving.errors import (
    AgentError,
    DeadlineError,
    ForwardedError,
    ModelNotReadyError,
    NoReplicaError,
    QueueFullError,
    SaturatedError,
    UnknownAdapterError,
)
from hatswarm_agent.serving.metrics import RouteMetrics
from hatswarm_agent.serving.registry import ModelVersion

# This node's key in a request's failed/refused sets (peers are keyed by address).
HERE = "local"
# A high-priority request waiting for capacity looks again at least this often.
WAIT_POLL_S = 0.02


def local_adapter_score(entry: ModelVersion, adapter: str) -> float:
    """How well this node's model version takes `adapter` (policy.adapter_score)."""
    adapters = entry.adapters
    if adapters is None:
        return ADAPTER_CANNOT
    resident = adapters.resident()
    return adapter_score(
        adapter in resident, adapter in adapters.names(), adapters.slots - len(resident)
    )


def routing_adapter(request: pb.ModelInferRequest) -> str:
    """The adapter to route by; a malformed one routes as none (the server refuses it)."""
    if ADAPTER_PARAM not in request.parameters:
        return ""
    try:
        return params.adapter(request)
    except params.ParameterError:
        return ""


def learn_adapter(route: VersionRoute, response: pb.ModelInferResponse, adapter: str) -> None:
    """The peer that answered has `adapter` loaded now (until the next table says more)."""
    node = params.answered_by(response)
    for r in route.replicas:
        if r.peer.node == node:
            r.adapters.used(adapter)
            return


class Capacity:
    """Requests waiting for room in the pool, most important first, woken as work completes."""

    def __init__(self) -> None:
        self._line = WaitingLine()

    async def wait(self, priority: int, deadline: float) -> None:
        """Wait (bounded by the deadline) until some request completes, or a short poll."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.join(priority, future)
        timeout = max(0.0, min(WAIT_POLL_S, deadline - time.monotonic()))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            self._line.remove(future)

    def wake(self) -> None:
        """Capacity was freed: the most important waiter looks again."""
        while len(self._line):
            future = self._line.next()
            if isinstance(future, asyncio.Future) and not future.done():
                future.set_result(None)
                return


@dataclass(slots=True)
class _Tries:
    """What one request may use and what it tried so far."""

    request: pb.ModelInferRequest
    replicas: list[Replica]
    limit: int
    adapter: str
    aware: bool  # route by adapter residency
    failed: set[str] = field(default_factory=set)  # hard failures: never again for this request
    refused: set[str] = field(default_factory=set)  # full this round: again after waiting
    failures: int = 0
    last: AgentError | None = None


class Attempts:
    """Carries one request through the pool (this node, peers, the cloud) within its deadline."""

    def __init__(
        self,
        config: DispatchConfig,
        dataplane: DataPlane,
        balancer: Balancer,
        forwarder: Forwarder,
        cloud: CloudTarget,
        metrics: RouteMetrics,
        capacity: Capacity,
    ) -> None:
        self.config = config
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.balancer = balancer
        self.forwarder = forwarder
        self.cloud = cloud
        self.metrics = metrics
        self.capacity = capacity

    async def run(
        self,
        request: pb.ModelInferRequest,
        route: VersionRoute | None,
        compiled: CompiledTable,
        deadline: float,
    ) -> pb.ModelInferResponse:
        """The first answer from here, a peer or the cloud; the reason none could otherwise."""
        model = request.model_name
        policy = self.config.policy_for(compiled)
        adapter = routing_adapter(request)
        aware = bool(adapter) and self.config.adapter_policy_for(compiled) != "Ignore"
        replicas = route.replicas if route is not None else []
        tries = _Tries(request, replicas, compiled.table.queue_limit, adapter, aware)
        while True:
            now = time.monotonic()
            if now >= deadline:
                detail = f": {tries.last}" if tries.last is not None else ""
                raise DeadlineError(f"deadline exceeded routing model '{model}'{detail}")
            local_full = HERE in tries.refused
            if HERE not in tries.failed and not local_full:
                entry = self._here(tries, now)
                if entry is not None:
                    if _has_room(entry, tries.limit):
                        try:
                            response = await self.dataplane.serve(request, entry)
                        except (QueueFullError, ModelNotReadyError) as exc:
                            full = isinstance(exc, QueueFullError)  # full: again after waiting
                            (tries.refused if full else tries.failed).add(HERE)
                            tries.last = exc
                            self.metrics.retries.inc()
                            continue
                        finally:
                            self.capacity.wake()
                        self.metrics.routed(model, ROUTE_LOCAL).inc()
                        return params.tag(response, self.config.node_name, ROUTE_LOCAL)
                    local_full = True
            exclude = tries.failed | tries.refused
            peer, saturated = self.balancer.choose(
                replicas, now, tries.limit, policy, exclude, adapter if aware else ""
            )
            if peer is not None:
                try:
                    response = await self.forwarder.forward_hedged(
                        peer, request, route, compiled, deadline, exclude, policy,
                        self.config.hedge_percentile(compiled),
                    )  # fmt: skip
                except AttemptFailedError as exc:
                    if self._after_failure(tries, peer.address, exc, compiled):
                        continue
                    break
                if adapter and route is not None:
                    learn_adapter(route, response, adapter)
                return response
            if not (saturated or local_full or tries.refused):
                break
            if route is not None and route.cloud_fallback and self.cloud.allow():
                return await self.forwarder.to_cloud(request, deadline)
            priority = params.priority(request)
            if should_shed(priority, self.config.shed_below_priority):
                self.metrics.shed.labels(model, str(priority)).inc()
                raise SaturatedError(
                    f"pool saturated for model '{model}' (every replica at its queue limit); "
                    f"priority {priority} shed"
                )
            await self.capacity.wait(priority, deadline)
            tries.refused.clear()
        # Nothing can serve it in the pool.
        if route is not None and route.cloud_fallback and self.cloud.enabled:
            if self.cloud.allow():
                return await self.forwarder.to_cloud(request, deadline)
            raise SaturatedError(
                f"no replica can serve model '{model}' and the cloud fallback is at its share "
                f"limit ({self.cloud.config.max_share:.0%} of recent requests)"
            )
        raise _no_replica(model, tries)

    def _here(self, tries: _Tries, now: float) -> ModelVersion | None:
        """This node's version for the request, unless it cannot or a peer should take it."""
        request, adapter = tries.request, tries.adapter
        try:
            entry = self.registry.get(request.model_name, request.model_version)
        except AgentError as exc:
            if tries.last is None:
                tries.last = exc
            return None
        if not adapter:
            return entry
        score = local_adapter_score(entry, adapter)
        if score == ADAPTER_CANNOT:  # a peer may have it
            try:
                entry.check_adapter(adapter)
            except UnknownAdapterError as exc:
                tries.last = exc
            return None
        if (
            tries.aware
            and score < ADAPTER_FREE_SLOT
            and self.balancer.best_adapter_score(
                tries.replicas, now, tries.limit, adapter, tries.failed | tries.refused
            )
            > score
        ):
            return None  # a peer has it loaded (or room): no eviction here
        return entry

    def _after_failure(
        self, tries: _Tries, address: str, exc: AttemptFailedError, compiled: CompiledTable
    ) -> bool:
        """Note a failed forward; True when another replica may try, False when out of retries.

        A status no other replica would answer differently is the caller's answer (raised).
        """
        tries.last = ForwardedError(exc.code, exc.message)
        if not exc.retryable:
            raise tries.last from None
        if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            tries.refused.add(address)
        else:
            tries.failed.add(address)
            tries.failures += 1
            if tries.failures > self.config.retries_for(compiled):
                return False
        self.metrics.retries.inc()
        return True


def _has_room(entry: ModelVersion, limit: int) -> bool:
    queue = entry.queue
    if queue is None:
        return False
    cap = min(limit, queue.limit) if limit > 0 else queue.limit
    return queue.depth < cap


def _no_replica(model: str, tries: _Tries) -> AgentError:
    """Why nothing served it: the local error when no peer could have (e.g. unknown model)."""
    last = tries.last
    unknown_adapter = tries.aware and isinstance(last, UnknownAdapterError)
    if last is not None and not tries.failed and (not tries.replicas or unknown_adapter):
        return last  # e.g. an unknown model or adapter: NOT_FOUND
    tried = ", ".join(sorted(tries.failed)) or "none"
    detail = f"; last error: {last}" if last is not None else ""
    return NoReplicaError(f"no replica of model '{model}' is available (tried: {tried}){detail}")
