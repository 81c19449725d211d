"""One request's attempts across the pool: this node first, then peers, then the cloud.

This node serves a request when it has the version and room in its queue (and, for a LoRA
adapter, has it loaded or a free slot for it, unless no peer does better); else the peer the
policy picks (policy.py). A peer that refuses or dies is retried on another replica of the
current routing table within the retry budget and the deadline (inference is idempotent); one
that does not answer within its attempt timeout keeps its chance while another replica is
asked (first answer wins), and the timeout counts toward its ejection. When the pool is
saturated low priorities are shed and high ones wait for capacity; when it cannot serve at all
the cloud fallback may, within its share.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
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
    PeerState,
    Replica,
    VersionRoute,
    WaitingLine,
    adapter_score,
    pick_version,
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
# An attempt past its hedging moment with no other replica to ask: look again this often.
HEDGE_RECHECK_S = 0.05


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
    adapter: str
    replicas: list[Replica] = field(default_factory=list)
    limit: int = 0
    aware: bool = False  # route by adapter residency
    failed: set[str] = field(default_factory=set)  # hard failures: never again for this request
    refused: set[str] = field(default_factory=set)  # full this round: again after waiting
    failures: int = 0
    out_of_retries: bool = False
    codes: list[grpc.StatusCode] = field(default_factory=list)  # of the failed forwards
    last: AgentError | None = None
    local_error: AgentError | None = None  # why this node cannot serve it (e.g. unknown model)


@dataclass(slots=True)
class _Flight:
    """One forwarded attempt in flight, and when it may be hedged or counts as timed out."""

    peer: PeerState
    seconds: float  # its attempt timeout
    hedge_at: float  # from then on another replica may be asked too
    timeout_at: float
    timed_out: bool = False


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
        tables: Callable[[], CompiledTable] | None = None,
    ) -> None:
        """`tables` gives the current compiled table: each retry routes by the newest one."""
        self.config = config
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.balancer = balancer
        self.forwarder = forwarder
        self.cloud = cloud
        self.metrics = metrics
        self.capacity = capacity
        self.tables = tables

    async def run(
        self,
        request: pb.ModelInferRequest,
        route: VersionRoute | None,
        compiled: CompiledTable,
        deadline: float,
    ) -> pb.ModelInferResponse:
        """The first answer from here, a peer or the cloud; the reason none could otherwise.

        Every round re-reads the routing table, so a retry can reach a replica that turned
        Ready after the request arrived. A forwarded attempt that outlives its timeout
        (forwarding.attempt_timeout) stays in flight while another replica is asked: the first
        answer wins and the others are cancelled.
        """
        model = request.model_name
        adapter = routing_adapter(request)
        tries = _Tries(request, adapter)
        flights: dict[asyncio.Task[pb.ModelInferResponse], _Flight] = {}
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    detail = f": {tries.last}" if tries.last is not None else ""
                    raise DeadlineError(f"deadline exceeded routing model '{model}'{detail}")
                compiled, route = self._current(request, compiled, route)
                policy = self.config.policy_for(compiled)
                tries.aware = bool(adapter) and self.config.adapter_policy_for(compiled) != "Ignore"
                tries.limit = compiled.table.queue_limit
                tries.replicas = route.replicas if route is not None else []
                local_full = HERE in tries.refused
                if not flights and HERE not in tries.failed and not local_full:
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
                saturated = False
                if not tries.out_of_retries and all(now >= f.hedge_at for f in flights.values()):
                    busy = {f.peer.address for f in flights.values()}
                    peer, saturated = self.balancer.choose(
                        tries.replicas, now, tries.limit, policy,
                        tries.failed | tries.refused | busy, adapter if tries.aware else "",
                    )  # fmt: skip
                    if peer is not None:
                        if flights:
                            self.metrics.hedges.inc()
                            for f in flights.values():
                                f.hedge_at = math.inf  # each attempt is hedged at most once
                        self._launch(flights, peer, request, deadline, compiled, now)
                    else:  # no one else to ask now: look again a little later
                        for f in flights.values():
                            f.hedge_at = now + HEDGE_RECHECK_S
                if flights:
                    answer = await self._next_answer(flights, deadline, tries, compiled)
                    if answer is None:
                        continue
                    if adapter and route is not None:
                        learn_adapter(route, answer, adapter)
                    return answer
                if tries.out_of_retries or not (saturated or local_full or tries.refused):
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
        finally:
            for task in flights:  # the losers of a hedge, or what the deadline cut short
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # retrieved: ended too, no longer anyone's answer
        # Nothing can serve it in the pool.
        if route is not None and route.cloud_fallback and self.cloud.enabled:
            if self.cloud.allow():
                return await self.forwarder.to_cloud(request, deadline)
            raise SaturatedError(
                f"no replica can serve model '{model}' and the cloud fallback is at its share "
                f"limit ({self.cloud.config.max_share:.0%} of recent requests)"
            )
        raise _no_replica(model, tries, route)

    def _current(
        self, request: pb.ModelInferRequest, compiled: CompiledTable, route: VersionRoute | None
    ) -> tuple[CompiledTable, VersionRoute | None]:
        """The newest table and the request's route in it (the same version it was given)."""
        current = self.tables() if self.tables is not None else compiled
        if current is compiled:
            return compiled, route
        routes = current.routes(request.model_name)
        asked = request.model_version or (route.version if route is not None else "")
        return current, pick_version(routes, self.balancer.rng, asked) if routes else None

    def _launch(
        self,
        flights: dict[asyncio.Task[pb.ModelInferResponse], _Flight],
        peer: PeerState,
        request: pb.ModelInferRequest,
        deadline: float,
        compiled: CompiledTable,
        now: float,
    ) -> None:
        """Start one forwarded attempt, with its timeout and hedging threshold."""
        seconds = self.forwarder.attempt_timeout(peer)
        hedge = seconds
        after = self.forwarder.hedge_after(self.config.hedge_percentile(compiled))
        if after is not None:
            hedge = min(hedge, after)
        task = asyncio.ensure_future(self.forwarder.forward(peer, request, deadline))
        flights[task] = _Flight(peer, seconds, now + hedge, now + seconds)

    async def _next_answer(
        self,
        flights: dict[asyncio.Task[pb.ModelInferResponse], _Flight],
        deadline: float,
        tries: _Tries,
        compiled: CompiledTable,
    ) -> pb.ModelInferResponse | None:
        """Wait for an attempt to end or the next hedge/timeout moment; the answer, if any.

        A failed attempt is noted (and may end the request: a status every replica would
        answer alike is the caller's answer); a timed-out one counts toward its peer's ejection.
        """
        now = time.monotonic()
        moments = [deadline]
        for f in flights.values():
            if f.hedge_at > now:
                moments.append(f.hedge_at)
            if not f.timed_out:
                moments.append(f.timeout_at)
        wait_s = max(0.0, min(moments) - now)
        done, _ = await asyncio.wait(
            flights.keys(), timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
        )
        now = time.monotonic()
        for task in done:
            flight = flights.pop(task)
            exc = task.exception()
            if exc is None:
                return task.result()
            if not isinstance(exc, AttemptFailedError):
                raise exc
            self._after_failure(tries, flight.peer.address, exc, compiled)
        for f in flights.values():
            if not f.timed_out and now >= f.timeout_at:
                f.timed_out = True
                tries.last = DeadlineError(
                    f"{f.peer.node}: no answer within its attempt timeout "
                    f"({f.seconds * 1000:.0f} ms)"
                )
                self.forwarder.timed_out(f.peer, f.seconds)
        return None

    def _here(self, tries: _Tries, now: float) -> ModelVersion | None:
        """This node's version for the request, unless it cannot or a peer should take it."""
        request, adapter = tries.request, tries.adapter
        try:
            entry = self.registry.get(request.model_name, request.model_version)
        except AgentError as exc:
            tries.local_error = exc
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
    ) -> None:
        """Note a failed forward; out of retries stops new attempts (those in flight go on).

        A status no other replica would answer differently is the caller's answer (raised).
        """
        tries.last = ForwardedError(exc.code, exc.message)
        if not exc.retryable:
            raise tries.last from None
        if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            tries.refused.add(address)
        else:
            tries.failed.add(address)
            tries.codes.append(exc.code)
            tries.failures += 1
            if tries.failures > self.config.retries_for(compiled):
                tries.out_of_retries = True
                return
        self.metrics.retries.inc()


def _has_room(entry: ModelVersion, limit: int) -> bool:
    queue = entry.queue
    if queue is None:
        return False
    cap = min(limit, queue.limit) if limit > 0 else queue.limit
    return queue.depth < cap


def _no_replica(model: str, tries: _Tries, route: VersionRoute | None) -> AgentError:
    """Why nothing served it, as precisely as this agent knows.

    The local error when no peer could have (e.g. an unknown model); NOT_FOUND naming the
    adapter when no replica knows it (by the table, or every replica said so); else
    UNAVAILABLE (retryable) listing what was tried and what is ejected.
    """
    last, adapter = tries.last, tries.adapter
    if isinstance(last, UnknownAdapterError) and not tries.failed and tries.aware:
        return last  # this node holds the model and not the adapter; no replica does better
    if adapter and tries.codes and all(c == grpc.StatusCode.NOT_FOUND for c in tries.codes):
        assert last is not None
        return last  # every replica asked said NOT_FOUND (e.g. the adapter): so is the answer
    nobody_knows = all(r.adapter_score(adapter) == ADAPTER_CANNOT for r in tries.replicas)
    if adapter and tries.aware and tries.replicas and not tries.failed and nobody_knows:
        known = {a for r in tries.replicas for a in (r.adapters.known or ())}
        version = route.version if route is not None and route.version else "any"
        return UnknownAdapterError(adapter, model, version, known)
    if not tries.replicas and not tries.failed:
        local = tries.local_error or last
        if local is not None:
            return local  # e.g. an unknown model: NOT_FOUND
    tried = ", ".join(sorted(tries.failed)) or "none"
    ejected = sorted(r.peer.node for r in tries.replicas if r.peer.ejected)
    parts = [f"tried: {tried}"]
    if ejected:
        parts.append(f"ejected: {', '.join(ejected)}")
    detail = f"; last error: {last}" if last is not None else ""
    return NoReplicaError(
        f"no replica of model '{model}' is available ({'; '.join(parts)}){detail}"
    )
