"""The pool as one agent sees it: local-first dispatch, forwarding, failover, cache, cloud.

Every agent is an entry point (a Service spreads clients over them) and `--gateway` is the same
code with nothing local. One request: the cache, when its route allows caching; then this node
when it has the version and room in its queue; else the peer router.py picks, over one
grpc.aio channel per peer, forwarding the parsed request as it came (tensors are never decoded
on the way) with the hop marker, the pool token and the remaining deadline. A peer that
refuses, times out or dies is retried on another replica within the deadline (inference is
idempotent); consecutive failures eject it until a health probe says it is back. When the pool
is saturated low priorities are shed and high ones wait; when it cannot serve at all the cloud
fallback may, within its share. Every answer says where it ran (`hatswarm.node`,
`hatswarm.route` response parameters).

A request naming a LoRA adapter is served here only when this node has it loaded or a free
slot for it (unless no peer does better), and peers are scored by adapter residency first
(router.py); a peer's NOT_FOUND for the adapter is retried on another. When the model's route
names an escalation, an answer whose confidence is under the threshold is sent on to the
bigger model or the cloud (within the deadline and the cloud's share) and `hatswarm.tier`
says which tier answered (cascade.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hatswarm_agent.protocol.auth import TlsFiles, TokenFile
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.routing import cascade
from hatswarm_agent.routing.cache import ResponseCache, request_key
from hatswarm_agent.routing.cloud import CloudTarget
from hatswarm_agent.routing.policy import (
    ADAPTER_CANNOT,
    ADAPTER_FREE_SLOT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_MS,
    RETRYABLE_CODES,
    Balancer,
    CompiledTable,
    Escalation,
    LatencyWindow,
    PeerState,
    VersionRoute,
    WaitingLine,
    adapter_score,
    compile_table,
    pick_version,
    should_shed,
)
from hatswarm_agent.routing.table import RoutingTableStore
from hatswarm_agent.serving.adapters import UnknownAdapterError
from hatswarm_agent.serving.errors import AgentError, ModelNotReadyError, QueueFullError
from hatswarm_agent.serving.metrics import RouteMetrics
from hatswarm_agent.serving.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)

HOP_KEY = "x-hatswarm-hop"
NODE_PARAM = "hatswarm.node"
ROUTE_PARAM = "hatswarm.route"
DEPTH_PARAM = "hatswarm.queue_depth"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 0),
]
# A high-priority request waiting for capacity looks again at least this often.
WAIT_POLL_S = 0.02

ServeLocal = Callable[[pb.ModelInferRequest, ModelVersion | None], Awaitable[pb.ModelInferResponse]]


class ForwardedError(AgentError):
    """A status a peer (or the cloud) answered with, passed on to the caller as it was."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = code.name.lower()


class SaturatedError(AgentError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "saturated"


class NoReplicaError(AgentError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "no_replica"


class DeadlineError(AgentError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "deadline"


@dataclass
class RouterConfig:
    """Agent-wide routing settings; a pushed table's own values win where it sets them."""

    node_name: str = "local"
    policy: str = ""  # empty: the table's (PowerOfTwoChoices by default)
    adapter_policy: str = ""  # empty: the table's (Affinity by default)
    retries: int = DEFAULT_RETRIES
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    hedge_after_percentile: float = 0.0
    shed_below_priority: int = 1
    cache_max_entries: int = 4096
    cache_max_bytes: int = 64 << 20
    probe_interval_s: float = 0.2


def request_priority(request: pb.ModelInferRequest) -> int:
    """The `priority` request parameter (int, higher = more important), 0 when absent."""
    if "priority" not in request.parameters:
        return 0
    p = request.parameters["priority"]
    kind = p.WhichOneof("parameter_choice")
    try:
        if kind == "string_param":
            return int(p.string_param)
        if kind in ("int64_param", "uint64_param", "bool_param"):
            return int(getattr(p, kind))
    except ValueError:
        return 0
    return 0


def request_adapter(request: pb.ModelInferRequest) -> str:
    """The LoRA adapter a request names ("" for none; a malformed one is the server's to refuse)."""
    if "adapter" not in request.parameters:
        return ""
    return request.parameters["adapter"].string_param


def local_adapter_score(entry: ModelVersion, adapter: str) -> float:
    """How well this node's model version takes `adapter` (router.adapter_score)."""
    adapters = entry.adapters
    if adapters is None:
        return ADAPTER_CANNOT
    resident = adapters.resident()
    return adapter_score(
        adapter in resident, adapter in adapters.names(), adapters.slots - len(resident)
    )


def unknown_adapter_error(entry: ModelVersion, adapter: str) -> UnknownAdapterError:
    """The NOT_FOUND this node's model version gives for `adapter` (as oip.py words it)."""
    if entry.adapters is not None:
        try:
            entry.adapters.check(adapter)
        except UnknownAdapterError as exc:
            return exc
    return UnknownAdapterError(
        f"adapter '{adapter}' is not known for model '{entry.name}' version '{entry.version}' "
        "(known: none)"
    )


def tag(response: pb.ModelInferResponse, node: str, route: str) -> pb.ModelInferResponse:
    params = response.parameters
    params[NODE_PARAM].string_param = node
    params[ROUTE_PARAM].string_param = route
    return response


def _route_of(response: pb.ModelInferResponse) -> str:
    params = response.parameters
    return params[ROUTE_PARAM].string_param if ROUTE_PARAM in params else ""


@dataclass
class _Attempt:
    """How a forwarded call ended when it did not succeed."""

    code: grpc.StatusCode
    message: str

    @property
    def retryable(self) -> bool:
        return self.code.name in RETRYABLE_CODES


class _AttemptFailedError(Exception):
    def __init__(self, attempt: _Attempt) -> None:
        super().__init__(attempt.message)
        self.attempt = attempt


class _Channel:
    """One grpc.aio channel to a peer and the two calls made on it."""

    def __init__(self, address: str, tls: TlsFiles | None) -> None:
        if tls is not None:
            self.channel = grpc.aio.secure_channel(
                address, tls.channel_credentials(), options=CHANNEL_OPTIONS
            )
        else:
            self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.infer = self.channel.unary_unary(
            INFER_METHOD,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        self.health = health_pb2_grpc.HealthStub(self.channel)


class PoolRouter:
    """Implements routing.Router for one agent."""

    def __init__(
        self,
        config: RouterConfig,
        registry: ModelRegistry,
        routing: RoutingTableStore,
        serve_local: ServeLocal,
        metrics: RouteMetrics,
        *,
        tokens: TokenFile | None = None,
        tls: TlsFiles | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.routing = routing
        self.serve_local = serve_local
        self.metrics = metrics
        self.tokens = tokens
        self.tls = tls
        self.balancer = Balancer(rng)
        self.cache = ResponseCache(config.cache_max_entries, config.cache_max_bytes)
        self.cloud = CloudTarget()
        self.latencies = LatencyWindow()
        self.self_addresses: set[str] = set()
        self._compiled: CompiledTable | None = None
        self._source: object = None
        self._channels: dict[str, _Channel] = {}
        self._waiting = WaitingLine()
        self._probe_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Learn our own addresses (table endpoints naming us are local) and start probing."""
        self.self_addresses = {f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"}
        self._source = None
        self._probe_task = asyncio.create_task(self._probe_loop(), name="peer-probes")

    async def stop(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        for ch in self._channels.values():
            await ch.channel.close()
        self._channels.clear()
        await self.cloud.close()

    # -- the table ------------------------------------------------------------------------

    def compiled(self) -> CompiledTable:
        """The current table, recompiled (keeping peer state) when a new one arrived."""
        table = self.routing.table
        if table is not self._source or self._compiled is None:
            known = self._compiled.peers if self._compiled else {}
            compiled = compile_table(table, self.config.node_name, self.self_addresses, known)
            for address in set(self._channels) - set(compiled.peers):
                self._close_later(self._channels.pop(address))
            for address in compiled.peers:
                if address not in self._channels:
                    self._channels[address] = _Channel(address, self.tls)
            old = self.cloud.configure(table.cloud)
            if old is not None:
                self._close_channel_later(old)
            for model, routes in compiled.models.items():
                self.cache.observe_versions(model, routes)
            self._compiled, self._source = compiled, table
        return self._compiled

    def _close_later(self, ch: _Channel) -> None:
        self._close_channel_later(ch.channel)

    def _close_channel_later(self, channel: grpc.aio.Channel) -> None:
        async def close() -> None:
            await channel.close(grace=1.0)

        with contextlib.suppress(RuntimeError):  # no running loop: nothing in flight either
            task = asyncio.get_running_loop().create_task(close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _retries(self, compiled: CompiledTable) -> int:
        return compiled.table.retries if compiled.table.generation else self.config.retries

    def _timeout_s(self, compiled: CompiledTable) -> float:
        ms = compiled.table.timeout_ms or self.config.timeout_ms
        return ms / 1000

    def _hedge_percentile(self, compiled: CompiledTable) -> float:
        return compiled.table.hedge_after_percentile or self.config.hedge_after_percentile

    # -- the request path -----------------------------------------------------------------

    async def infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        metadata = context.invocation_metadata() or ()
        for key, _ in metadata:
            if key == HOP_KEY:
                return await self._serve_hop(request)
        compiled = self.compiled()
        self.cloud.window.request()
        budget = self._timeout_s(compiled)
        remaining = context.time_remaining()
        if remaining is not None and math.isfinite(remaining):
            budget = min(budget, remaining)
        deadline = time.monotonic() + budget
        model = request.model_name
        routes = compiled.routes(model)
        route = pick_version(routes, self.balancer.rng, request.model_version) if routes else None
        if route is not None and route.version and not request.model_version:
            request.model_version = route.version  # peers serve the version drawn here
        key = None
        if route is not None and route.cache_ttl_s > 0:
            version = request.model_version
            if not version:
                local = self._local(request)
                version = local.version if local is not None else ""
                self.cache.observe_versions(model, {*routes, version})
            key = request_key(request, version)
            hit = self.cache.get(key, request.id)
            if hit is not None:
                self.metrics.cache_hits.labels(model).inc()
                self.metrics.requests.labels(model, "cache").inc()
                return tag(hit, "cache", "cache")
            self.metrics.cache_misses.labels(model).inc()
        response = await self._dispatch(request, route, compiled, deadline)
        escalation = route.escalation if route is not None else None
        if escalation is not None:  # tiered: the answer says which tier gave it
            response = await self._escalate(request, response, escalation, compiled, deadline)
        if key is not None and route is not None:
            self.cache.put(key, response, route.cache_ttl_s)
        return response

    async def _escalate(
        self,
        request: pb.ModelInferRequest,
        response: pb.ModelInferResponse,
        rule: Escalation,
        compiled: CompiledTable,
        deadline: float,
    ) -> pb.ModelInferResponse:
        """Send an unsure edge answer's request on to the bigger tier; its answer, else ours.

        The edge answer stands when it is sure enough, when no time is left, when the cloud is
        at its share limit, or when the bigger tier fails (logged): a cascade never turns an
        answer into an error.
        """
        model = request.model_name
        if _route_of(response) == "cloud":  # the pool could not serve it: the cloud answered
            return cascade.set_tier(response, cascade.TIER_CLOUD)
        edge = cascade.set_tier(response, cascade.TIER_EDGE)
        if not cascade.unsure(response, rule.output, rule.threshold):
            return edge
        if time.monotonic() >= deadline:
            return edge
        try:
            if rule.cloud:
                if not self.cloud.allow():
                    return edge
                self.metrics.escalations.labels(model, "cloud").inc()
                answer = await self._to_cloud(request, deadline)
                return cascade.set_tier(answer, cascade.TIER_CLOUD)
            bigger = pb.ModelInferRequest()
            bigger.CopyFrom(request)
            bigger.model_name, bigger.model_version = rule.model, ""
            bigger.parameters.pop("adapter", None)  # the adapter belongs to the small model
            routes = compiled.routes(rule.model)
            route = pick_version(routes, self.balancer.rng) if routes else None
            if route is not None and route.version:
                bigger.model_version = route.version
            self.metrics.escalations.labels(model, rule.model).inc()
            answer = await self._dispatch(bigger, route, compiled, deadline)
        except AgentError as exc:
            log.info("escalation of model '%s' failed, the edge answer stands: %s", model, exc)
            return edge
        tier = (
            cascade.TIER_CLOUD
            if _route_of(answer) == "cloud"
            else cascade.tier_of_model(rule.model)
        )
        return cascade.set_tier(answer, tier)

    async def _serve_hop(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """A peer forwarded this: serve it here or fail (never forward twice)."""
        entry = self.registry.get(request.model_name, request.model_version)
        response = await self.serve_local(request, entry)
        self.metrics.routed(request.model_name, "local").inc()
        tag(response, self.config.node_name, "local")
        if entry.queue is not None:
            response.parameters[DEPTH_PARAM].int64_param = entry.queue.depth
        return response

    def _local(self, request: pb.ModelInferRequest) -> ModelVersion | None:
        try:
            return self.registry.get(request.model_name, request.model_version)
        except AgentError:
            return None

    def _local_has_room(self, entry: ModelVersion, limit: int) -> bool:
        queue = entry.queue
        if queue is None:
            return False
        cap = min(limit, queue.limit) if limit > 0 else queue.limit
        return queue.depth < cap

    async def _dispatch(
        self,
        request: pb.ModelInferRequest,
        route: VersionRoute | None,
        compiled: CompiledTable,
        deadline: float,
    ) -> pb.ModelInferResponse:
        model = request.model_name
        limit = compiled.table.queue_limit
        policy = self.config.policy or compiled.policy
        retries = self._retries(compiled)
        replicas = route.replicas if route is not None else []
        priority = request_priority(request)
        adapter = request_adapter(request)
        adapter_policy = self.config.adapter_policy or compiled.adapter_policy
        aware = bool(adapter) and adapter_policy != "Ignore"
        failed: set[str] = set()  # hard failures: never again for this request
        refused: set[str] = set()  # full this round: again after waiting
        failures = 0
        last: AgentError | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                detail = f": {last}" if last is not None else ""
                raise DeadlineError(f"deadline exceeded routing model '{model}'{detail}")
            local_full = False
            if "local" not in failed and "local" not in refused:
                try:
                    entry: ModelVersion | None = self.registry.get(model, request.model_version)
                except AgentError as exc:
                    entry = None
                    if last is None:
                        last = exc
                if entry is not None and adapter:
                    score = local_adapter_score(entry, adapter)
                    if score == ADAPTER_CANNOT:  # a peer may have it
                        last = unknown_adapter_error(entry, adapter)
                        entry = None
                    elif (
                        aware
                        and score < ADAPTER_FREE_SLOT
                        and self.balancer.best_adapter_score(
                            replicas, now, limit, adapter, failed | refused
                        )
                        > score
                    ):
                        entry = None  # a peer has it loaded (or room): no eviction here
                if entry is not None:
                    if self._local_has_room(entry, limit):
                        try:
                            response = await self.serve_local(request, entry)
                        except (QueueFullError, ModelNotReadyError) as exc:
                            (refused if isinstance(exc, QueueFullError) else failed).add("local")
                            last = exc
                            self.metrics.retries.inc()
                            continue
                        finally:
                            self._wake()
                        self.metrics.routed(model, "local").inc()
                        return tag(response, self.config.node_name, "local")
                    local_full = True
            elif "local" in refused:
                local_full = True
            peer, saturated = self.balancer.choose(
                replicas, now, limit, policy, failed | refused, adapter if aware else ""
            )
            if peer is not None:
                try:
                    response = await self._forward_maybe_hedged(
                        peer, request, route, compiled, deadline, failed | refused, policy
                    )
                except _AttemptFailedError as exc:
                    attempt = exc.attempt
                    last = ForwardedError(attempt.code, attempt.message)
                    if not attempt.retryable:
                        raise last from None
                    if attempt.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        refused.add(peer.address)
                    else:
                        failed.add(peer.address)
                        failures += 1
                        if failures > retries:
                            break
                    self.metrics.retries.inc()
                    continue
                if adapter and route is not None:
                    self._learn_adapter(route, response, adapter)
                return response
            saturated = saturated or local_full or bool(refused)
            if not saturated:
                break
            if route is not None and route.cloud_fallback and self.cloud.allow():
                return await self._to_cloud(request, deadline)
            if should_shed(priority, self.config.shed_below_priority):
                self.metrics.shed.labels(model, str(priority)).inc()
                raise SaturatedError(
                    f"pool saturated for model '{model}' (every replica at its queue limit); "
                    f"priority {priority} shed"
                )
            await self._wait(priority, deadline)
            refused.clear()
        # Nothing can serve it in the pool.
        if route is not None and route.cloud_fallback and self.cloud.enabled:
            if self.cloud.allow():
                return await self._to_cloud(request, deadline)
            raise SaturatedError(
                f"no replica can serve model '{model}' and the cloud fallback is at its share "
                f"limit ({self.cloud.config.max_share:.0%} of recent requests)"
            )
        unknown_adapter = aware and isinstance(last, UnknownAdapterError)
        if last is not None and not failed and (not replicas or unknown_adapter):
            raise last  # e.g. an unknown model or adapter: NOT_FOUND
        tried = ", ".join(sorted(failed)) or "none"
        detail = f"; last error: {last}" if last is not None else ""
        raise NoReplicaError(f"no replica of model '{model}' is available (tried: {tried}){detail}")

    def _learn_adapter(
        self, route: VersionRoute, response: pb.ModelInferResponse, adapter: str
    ) -> None:
        """The peer that answered has `adapter` loaded now (until the next table says more)."""
        params = response.parameters
        node = params[NODE_PARAM].string_param if NODE_PARAM in params else ""
        for r in route.replicas:
            if r.peer.node == node:
                r.adapters.used(adapter)
                return

    # -- forwarding -----------------------------------------------------------------------

    def _hop_metadata(self) -> tuple[tuple[str, str], ...]:
        md: tuple[tuple[str, str], ...] = ((HOP_KEY, "1"),)
        if self.tokens is not None:
            md += self.tokens.metadata()
        return md

    async def _forward_maybe_hedged(
        self,
        peer: PeerState,
        request: pb.ModelInferRequest,
        route: VersionRoute | None,
        compiled: CompiledTable,
        deadline: float,
        exclude: set[str],
        policy: str,
    ) -> pb.ModelInferResponse:
        pct = self._hedge_percentile(compiled)
        after = self.latencies.percentile(pct) if pct > 0 else None
        if after is None or route is None or len(route.replicas) < 2:
            return await self._forward(peer, request, deadline)
        first = asyncio.ensure_future(self._forward(peer, request, deadline))
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
        second = asyncio.ensure_future(self._forward(other, request, deadline))
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

    async def _forward(
        self, peer: PeerState, request: pb.ModelInferRequest, deadline: float
    ) -> pb.ModelInferResponse:
        channel = self._channels.get(peer.address)
        if channel is None:
            channel = self._channels[peer.address] = _Channel(peer.address, self.tls)
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
            raise _AttemptFailedError(_Attempt(code, f"{peer.node}: {exc.details()}")) from None
        finally:
            peer.outstanding -= 1
            self._wake()
        elapsed = time.perf_counter() - start
        params = response.parameters
        depth = -1
        if DEPTH_PARAM in params:
            depth = int(params[DEPTH_PARAM].int64_param)
            del params[DEPTH_PARAM]
        peer.on_success(elapsed, depth, time.monotonic())
        self.latencies.add(elapsed)
        node = params[NODE_PARAM].string_param if NODE_PARAM in params else peer.node
        self.metrics.requests.labels(request.model_name, "peer").inc()
        return tag(response, node, "peer")

    async def _to_cloud(
        self, request: pb.ModelInferRequest, deadline: float
    ) -> pb.ModelInferResponse:
        model = request.model_name
        self.cloud.window.sent()
        try:
            response = await self.cloud.call()(
                request,
                timeout=max(0.001, deadline - time.monotonic()),
                metadata=((HOP_KEY, "1"), *self.cloud.metadata()),
            )
        except grpc.aio.AioRpcError as exc:
            raise ForwardedError(exc.code(), f"cloud fallback: {exc.details()}") from None
        self.metrics.cloud_requests.labels(model).inc()
        cost = self.cloud.cost_usd()
        if cost:
            self.metrics.cloud_cost.labels(model).inc(cost)
        self.metrics.requests.labels(model, "cloud").inc()
        response.parameters.pop(DEPTH_PARAM, None)
        return tag(response, "cloud", "cloud")

    # -- waiting for capacity -------------------------------------------------------------

    async def _wait(self, priority: int, deadline: float) -> None:
        """Wait (bounded by the deadline) until some request completes, or a short poll."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.join(priority, future)
        timeout = max(0.0, min(WAIT_POLL_S, deadline - time.monotonic()))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiting.remove(future)

    def _wake(self) -> None:
        """Capacity was freed: the most important waiter looks again."""
        while len(self._waiting):
            future = self._waiting.next()
            if isinstance(future, asyncio.Future) and not future.done():
                future.set_result(None)
                return

    # -- ejected peers --------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.probe_interval_s)
            compiled = self._compiled
            if compiled is None:
                continue
            now = time.monotonic()
            due = [p for p in compiled.peers.values() if p.ejected and now >= p.ejected_until]
            if due:
                await asyncio.gather(*(self._probe(p) for p in due))

    async def _probe(self, peer: PeerState) -> None:
        channel = self._channels.get(peer.address)
        healthy = False
        if channel is not None:
            try:
                reply = await channel.health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                healthy = reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                healthy = False
        peer.on_probe(healthy, time.monotonic())
        if healthy:
            log.warning("peer %s readmitted", peer.node)

    def peers(self) -> Iterable[PeerState]:
        return self._compiled.peers.values() if self._compiled else ()
