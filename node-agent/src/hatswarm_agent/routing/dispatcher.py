"""The dispatcher: where one request to this agent is answered, for the whole pool.

Every agent is an entry point (a Service spreads clients over them) and `--gateway` is the same
code with nothing local. One request: the cache, when its route allows caching; else its
attempts across the pool (attempts.py: this node, peers, the cloud); then, when the route names
an escalation, an unsure answer goes on to the bigger tier (escalation.py). A request a peer
forwarded (the hop marker) is served here or fails: never forwarded twice. Every answer says
where it ran (`hatswarm.node`, `hatswarm.route`).

Collaborators, none of which points back: the data plane (serving/) runs requests here,
peers.py keeps the channels, forwarding.py makes the calls, policy.py decides.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.auth import Metadata, MetadataSource, TlsFiles
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import HOP_KEY, NODE_CACHE, ROUTE_CACHE, ROUTE_LOCAL
from hatswarm_agent.routing.attempts import Attempts, Capacity
from hatswarm_agent.routing.cache import ResponseCache, request_key
from hatswarm_agent.routing.cloud import CloudTarget
from hatswarm_agent.routing.config import DispatchConfig
from hatswarm_agent.routing.escalation import Escalator
from hatswarm_agent.routing.forwarding import Forwarder
from hatswarm_agent.routing.peers import PROBE_TIMEOUT_S, PeerChannel, Peers
from hatswarm_agent.routing.policy import Balancer, CompiledTable, compile_table, pick_version
from hatswarm_agent.routing.table import RoutingTableStore, merge_static
from hatswarm_agent.serving.dataplane import DataPlane
from hatswarm_agent.serving.errors import AgentError, ModelNotFoundError, NoTableError
from hatswarm_agent.serving.metrics import RouteMetrics
from hatswarm_agent.serving.registry import ModelVersion


class Dispatcher:
    """Answers ModelInfer for one agent (the OIP servicer's `infer`)."""

    def __init__(
        self,
        config: DispatchConfig,
        dataplane: DataPlane,
        routing: RoutingTableStore,
        metrics: RouteMetrics,
        *,
        tokens: MetadataSource | None = None,
        tls: TlsFiles | None = None,
        rng: random.Random | None = None,
        cloud_tokens: Mapping[str, Path] | None = None,
    ) -> None:
        """`tokens`: what forwarded hops carry (the pool-internal peer credential,
        protocol.auth.AgentAuth); `cloud_tokens`: the agent's named cloud tokens."""
        self.config = config
        self.dataplane = dataplane
        self.registry = dataplane.registry
        self.routing = routing
        self.metrics = metrics
        self.balancer = Balancer(rng)
        self.cache = ResponseCache(config.cache_max_entries, config.cache_max_bytes)
        self.cloud = CloudTarget(cloud_tokens)
        self.peers = Peers(tls, config.probe_interval_s)
        capacity = Capacity()
        self.forwarder = Forwarder(
            self.peers, self.cloud, self.balancer, metrics, capacity.wake, tokens,
            attempt_factor=config.attempt_timeout_factor,
            attempt_floor_s=config.attempt_timeout_min_ms / 1000,
        )  # fmt: skip
        self.attempts = Attempts(
            config, dataplane, self.balancer, self.forwarder, self.cloud, metrics, capacity,
            self.compiled,
        )  # fmt: skip
        self.escalator = Escalator(
            self.attempts, self.forwarder, self.cloud, metrics, self.balancer.rng
        )
        self.self_addresses: set[str] = set()
        self._compiled: CompiledTable | None = None
        self._source: object = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Learn our own addresses (table endpoints naming us are local) and start probing."""
        self.self_addresses = {f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}"}
        self._source = None
        self.peers.start()

    async def stop(self) -> None:
        await self.peers.stop()
        await self.cloud.close()

    # -- the table ------------------------------------------------------------------------

    def compiled(self) -> CompiledTable:
        """The current table, recompiled (keeping peer state) when a new one arrived."""
        table = self.routing.table
        if table is not self._source or self._compiled is None:
            known = self._compiled.peers if self._compiled else {}
            effective = merge_static(table, self.routing.static)
            compiled = compile_table(effective, self.config.node_name, self.self_addresses, known)
            self.peers.adopt(compiled.peers, self.config.timeout_s(compiled))
            old = self.cloud.configure(effective.cloud)
            if old is not None:
                self.peers.close_later(old)
            for model, routes in compiled.models.items():
                self.cache.observe_versions(model, routes)
            self._compiled, self._source = compiled, table
        return self._compiled

    # -- the request path -----------------------------------------------------------------

    async def infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        metadata = context.invocation_metadata() or ()
        for key, _ in metadata:
            if key == HOP_KEY:
                return await self._serve_hop(request)
        params.priority(request)  # a malformed priority is refused up front, not read as 0
        compiled = self.compiled()
        self.cloud.window.request()
        budget = self.config.timeout_s(compiled)
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
                self.metrics.requests.labels(model, ROUTE_CACHE).inc()
                return params.tag(hit, NODE_CACHE, ROUTE_CACHE)
            self.metrics.cache_misses.labels(model).inc()
        if route is None and self.awaiting_table():
            self._check_local(request)
        response = await self.attempts.run(request, route, compiled, deadline)
        escalation = route.escalation if route is not None else None
        if escalation is not None:  # tiered: the answer says which tier gave it
            response = await self.escalator.escalate(
                request, response, escalation, compiled, deadline
            )
        if key is not None and route is not None:
            self.cache.put(key, response, route.cache_ttl_s)
        return response

    async def _serve_hop(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """A peer forwarded this: serve it here or fail (never forward twice)."""
        entry = self.registry.get(request.model_name, request.model_version)
        response = await self.dataplane.serve(request, entry)
        self.metrics.routed(request.model_name, ROUTE_LOCAL).inc()
        params.tag(response, self.config.node_name, ROUTE_LOCAL)
        if entry.queue is not None:
            params.set_queue_depth(response, entry.queue.depth)
        return response

    def awaiting_table(self) -> bool:
        """In a pool (`--await-routing-table`) and no table yet: pushed, restored or static."""
        return (
            self.config.await_table and self.routing.generation == 0 and self.routing.static is None
        )

    def _check_local(self, request: pb.ModelInferRequest) -> None:
        """Without a table, a model this node does not have may be anywhere in the pool:
        UNAVAILABLE (a client retries), never NOT_FOUND (it would not)."""
        try:
            self.registry.get(request.model_name, request.model_version)
        except ModelNotFoundError:
            raise NoTableError(
                f"model '{request.model_name}' is not on this node and its routing table has "
                "not arrived yet: retry shortly"
            ) from None

    # -- readiness and metadata for the pool ----------------------------------------------

    async def model_ready(self, request: pb.ModelReadyRequest) -> tuple[bool, str]:
        """Whether a replica of the pool has the model ready, and which node answered."""
        answer = await self._ask_replicas(
            request.name, request.version, lambda ch, md, t: ch.oip.ModelReady(
                request, metadata=md, timeout=t
            )
        )  # fmt: skip
        if answer is None:
            return False, ""
        reply, node = answer
        return bool(reply.ready), node

    async def model_metadata(
        self, request: pb.ModelMetadataRequest
    ) -> tuple[pb.ModelMetadataResponse, str] | None:
        """A replica's metadata for the model (the node it came from); None when none has it."""
        return await self._ask_replicas_with("ModelMetadata", request)

    async def model_config(
        self, request: pb.ModelConfigRequest
    ) -> tuple[pb.ModelConfigResponse, str] | None:
        """A replica's Triton model config (the node it came from); None when none has it."""
        return await self._ask_replicas_with("ModelConfig", request)

    async def _ask_replicas_with(self, rpc: str, request: Any) -> tuple[Any, str] | None:
        """`rpc` (an OIP method taking a model's name and version) on the model's replicas."""
        return await self._ask_replicas(
            request.name, request.version, lambda ch, md, t: getattr(ch.oip, rpc)(
                request, metadata=md, timeout=t
            )
        )  # fmt: skip

    async def _ask_replicas(
        self, model: str, version: str, call: Callable[[PeerChannel, Metadata, float], Any]
    ) -> tuple[Any, str] | None:
        """`call` on the replicas of the model's route, best first, until one answers yes.

        A peer answering ModelReady false or NOT_FOUND (a stale table) is passed over for the
        next; the whole walk stays within the pool's request budget.
        """
        compiled = self.compiled()
        routes = compiled.routes(model)
        route = pick_version(routes, self.balancer.rng, version) if routes else None
        if route is None:
            return None
        deadline = time.monotonic() + self.config.timeout_s(compiled)
        tried: set[str] = set()
        while time.monotonic() < deadline:
            peer, _ = self.balancer.choose(
                route.replicas, time.monotonic(), 0, self.config.policy_for(compiled), tried
            )
            if peer is None:
                return None
            tried.add(peer.address)
            timeout = min(
                deadline - time.monotonic(),
                max(PROBE_TIMEOUT_S, self.forwarder.attempt_timeout(peer)),
            )
            try:
                reply = await call(
                    self.peers.channel(peer.address), self.forwarder.hop_metadata(), timeout
                )
            except grpc.aio.AioRpcError:
                continue
            if getattr(reply, "ready", True):
                return reply, peer.node
        return None

    def _local(self, request: pb.ModelInferRequest) -> ModelVersion | None:
        try:
            return self.registry.get(request.model_name, request.model_version)
        except AgentError:
            return None
