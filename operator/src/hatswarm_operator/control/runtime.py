"""The acting half of the control loop: probe agents, plan (pure), then load/unload/route.

`PoolRuntime.tick` is called on the pool's probe interval by either adapter (a kopf daemon or
`hatswarm up`). Loads run as background tasks, at most `maxConcurrentLoadsPerNode` per node,
with exponential backoff per (node, model, version) after a failure, so one bad artifact never
stalls the loop or hammers a node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import grpc
from hatswarm_agent.protocol.v1 import control_pb2

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus, PoolCost
from hatswarm_operator.control import metrics as operator_metrics
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.gate_runner import GateUnavailableError, run_gate
from hatswarm_operator.core.autoscale import (
    ScaleMetrics,
    ScaleState,
    decide_replicas,
    policy_from_spec,
)
from hatswarm_operator.core.gate import gate_from_spec
from hatswarm_operator.core.inventory import NodeState, observe
from hatswarm_operator.core.reconcile import Event, Load, PoolPlan, Route, plan_pool, selects
from hatswarm_operator.core.rollout import GateVerdict
from hatswarm_operator.core.rolloutplan import (
    Counters,
    GateRequest,
    RolloutContext,
    RolloutMemory,
    attempt_key,
    counters,
    memory_from_status,
    window_metrics,
)
from hatswarm_operator.finops import attribution as costing
from hatswarm_operator.finops import metrics as cost_metrics

log = logging.getLogger("hatswarm.loop")

COST_STATUS_SECONDS = 30.0

PublicKeyResolver = Callable[[str, str], Awaitable[str]]  # (namespace, "secret/key") -> key
GateKey = tuple[str, float | None]  # (version, when its rollout attempt began)
StepKey = tuple[str, int, float | None]  # (canary version, step, when the step began)

GATE_RETRY_SECONDS = 2.0
"""After a gate run found its node unreachable, wait this long before asking again."""


class Sink(Protocol):
    """Where decisions become visible: Kubernetes status + Events, or the local terminal."""

    async def model_status(self, namespace: str, name: str, status: EdgeModelStatus) -> None: ...

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None: ...

    async def event(self, namespace: str, event: Event) -> None: ...


@dataclass
class _Backoff:
    attempts: int = 0
    not_before: float = 0.0


async def _no_keys(namespace: str, ref: str) -> str:
    raise LookupError(f"no public key resolver for {ref}")


class PoolRuntime:
    """Live state of one pool: its nodes, loads in flight, backoffs, last pushed routes."""

    def __init__(
        self,
        client: AgentClient,
        sink: Sink,
        *,
        clock: Callable[[], float] = time.time,
        resolve_public_key: PublicKeyResolver = _no_keys,
    ) -> None:
        self.client = client
        self.sink = sink
        self.clock = clock
        self.resolve_public_key = resolve_public_key
        self.nodes: dict[str, NodeState] = {}
        self.replicas: dict[str, int] = {}
        self.last_plan: PoolPlan | None = None
        self._inflight: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._backoff: dict[tuple[str, str, str], _Backoff] = {}
        self._routes: tuple[Route, ...] | None = None
        self._generation = int(time.time() * 1000)
        self._pushed: dict[str, int] = {}
        self._published: dict[str, str] = {}
        self._scale_state: dict[str, ScaleState] = {}
        self.cost_ledger = costing.CostLedger()
        self._cost_status: tuple[float, PoolCost, dict[str, float | None]] | None = None
        self.failovers = 0
        # Rollouts: the last decided state per model (with the object's uid), the counters
        # when each canary step began, the gates' verdicts and runs in flight.
        self._rollouts: dict[str, tuple[str, RolloutMemory]] = {}
        self._windows: dict[str, tuple[StepKey, Counters]] = {}
        self._verdicts: dict[str, tuple[GateKey, GateVerdict]] = {}
        self._gate_tasks: dict[str, tuple[GateKey, asyncio.Task[None]]] = {}
        self._gate_retry: dict[str, float] = {}

    # --- inventory -----------------------------------------------------------------------

    def set_nodes(self, nodes: Sequence[NodeState]) -> None:
        """Replace Kubernetes' (or the local) view of the nodes, keeping probe history."""
        fresh: dict[str, NodeState] = {}
        for n in nodes:
            old = self.nodes.get(n.name)
            if old is not None and old.address == n.address:
                n = replace(
                    old,
                    labels=n.labels,
                    k8s_ready=n.k8s_ready,
                    schedulable=n.schedulable,
                    memory_mib=n.memory_mib,
                    npu_contexts=n.npu_contexts,
                )
            fresh[n.name] = n
        self.nodes = fresh

    async def probe(self, threshold: int) -> list[tuple[NodeState, NodeState]]:
        """Probe every node at once; return (before, after) for nodes that changed up/down."""

        async def one(n: NodeState) -> NodeState:
            try:
                status = await self.client.status(n.address)
            except grpc.aio.AioRpcError as err:
                return observe(n, None, self.clock(), threshold, err.code().name)
            return observe(n, status, self.clock(), threshold)

        after = await asyncio.gather(*(one(n) for n in self.nodes.values()))
        changed = [
            (self.nodes[a.name], a) for a in after if self.nodes[a.name].in_pool != a.in_pool
        ]
        self.nodes = {a.name: a for a in after}
        return changed

    # --- one reconcile ---------------------------------------------------------------------

    async def tick(self, pool: InferencePool, models: Sequence[EdgeModel]) -> PoolPlan:
        ns = pool.metadata.namespace
        threshold = pool.spec.failure_detection.failure_threshold
        for before, after in await self.probe(threshold):
            if after.in_pool:
                await self.sink.event(
                    ns,
                    Event("InferencePool", pool.metadata.name, "Normal", "NodeJoined",
                          f"node {after.name} ({after.accelerator}) joined the pool"),
                )  # fmt: skip
            else:
                self.failovers += 1
                await self.sink.event(
                    ns,
                    Event("InferencePool", pool.metadata.name, "Warning", "NodeLost",
                          f"node {after.name} left the pool: {after.out_reason}; "
                          f"re-placing {len([o for o in before.models if o.ready])} replicas"),
                )  # fmt: skip
        for ev in self._autoscale(pool, models):
            await self.sink.event(ns, ev)
        mine = [m for m in models if m.spec.pool == pool.metadata.name]
        plan = plan_pool(
            pool,
            models,
            list(self.nodes.values()),
            self.clock(),
            self.replicas,
            self._rollout_contexts(mine),
        )
        self._cost(pool, mine, plan)
        self.last_plan = plan
        self._remember(mine, plan)
        # Routes first: they no longer list what is about to be unloaded.
        await self._push_routes(pool, plan)
        await self._act(pool, plan)
        for ev in plan.rollout_events:
            await self.sink.event(ns, ev)
        self._run_gates(mine, plan)
        await self._publish(pool, models, plan)
        return plan

    # --- cost ------------------------------------------------------------------------------

    def _cost(self, pool: InferencePool, models: Sequence[EdgeModel], plan: PoolPlan) -> None:
        """Live cost: charge this window to models by NPU seconds; measured energy if known.

        The gauges move every tick; the figures in status only every `COST_STATUS_SECONDS`
        so a busy pool does not rewrite its status each second.
        """
        selected = [n for n in self.nodes.values() if selects(pool.spec.node_selector, n.labels)]
        now = self.clock()
        live = costing.account(
            self.cost_ledger, costing.pool_cost_inputs(pool), costing.node_samples(selected), now
        )
        operator_metrics.cost().publish(pool.metadata.name, live, cost_metrics.showback_of(models))
        if self._cost_status is None or now - self._cost_status[0] >= COST_STATUS_SECONDS:
            self._cost_status = (now, costing.pool_cost(live), costing.model_cost_per1k(live))
        _, pool_cost, per1k = self._cost_status
        plan.pool_status.cost = pool_cost
        for name, st in plan.model_status.items():
            st.cost_per1k_usd = per1k.get(name)

    # --- rollouts --------------------------------------------------------------------------

    def rollout_memory(self, m: EdgeModel) -> RolloutMemory:
        """Where a model's rollout stands: what this runtime last decided for this very object,
        else what its status says (after a restart, or a model this runtime never saw)."""
        kept = self._rollouts.get(m.metadata.name)
        if kept is not None and kept[0] == m.metadata.uid:
            return kept[1]
        return memory_from_status(m.status)

    def _rollout_contexts(self, models: Sequence[EdgeModel]) -> dict[str, RolloutContext]:
        nodes = list(self.nodes.values())
        out: dict[str, RolloutContext] = {}
        for m in models:
            name = m.metadata.name
            memory = self.rollout_memory(m)
            c = memory.canary
            gate = None
            kept = self._verdicts.get(name)
            if c is not None and kept is not None and kept[0] == (c.version, attempt_key(c)):
                gate = kept[1]
            canary_metrics = stable_metrics = None
            window = self._windows.get(name)
            if (
                c is not None
                and c.phase == "Progressing"
                and window is not None
                and window[0] == (c.version, c.step, c.started_at)
            ):
                canary_metrics = window_metrics(nodes, name, c.version, window[1])
                if memory.stable_version is not None:
                    stable_metrics = window_metrics(nodes, name, memory.stable_version, window[1])
            out[name] = RolloutContext(memory, gate, canary_metrics, stable_metrics)
        return out

    def _remember(self, models: Sequence[EdgeModel], plan: PoolPlan) -> None:
        """Keep each model's new rollout state, and the counters when a canary step began."""
        nodes = list(self.nodes.values())
        names = {m.metadata.name for m in models}
        for m in models:
            name = m.metadata.name
            memory = plan.rollouts.get(name)
            if memory is None:
                continue
            self._rollouts[name] = (m.metadata.uid, memory)
            c = memory.canary
            if c is None or c.phase != "Progressing":
                self._windows.pop(name, None)
                continue
            key = (c.version, c.step, c.started_at)
            window = self._windows.get(name)
            if window is None or window[0] != key:
                self._windows[name] = (key, counters(nodes, name))
        for state in (self._rollouts, self._windows, self._verdicts, self._gate_retry):
            for name in [k for k in state if k not in names]:
                del state[name]

    def _run_gates(self, models: Sequence[EdgeModel], plan: PoolPlan) -> None:
        """Start the validation gate of every version that is ready for it (once each)."""
        spec_of = {m.metadata.name: m for m in models}
        now = self.clock()
        for req in plan.gates:
            m = spec_of.get(req.model)
            if m is None:
                continue
            key: GateKey = (req.version, req.key)
            if self._verdicts.get(req.model, (None,))[0] == key:
                continue
            running = self._gate_tasks.get(req.model)
            if running is not None and not running[1].done():
                if running[0] == key:
                    continue
                running[1].cancel()  # a newer attempt supersedes it
            if self._gate_retry.get(req.model, 0.0) > now:
                continue
            if m.spec.validation is None:
                # Policy said "gate" but the spec has none any more: nothing to check.
                self._verdicts[req.model] = (key, GateVerdict(req.version, True, "no gate"))
                continue
            task = asyncio.create_task(self._gate(m, req, key))
            self._gate_tasks[req.model] = (key, task)

    async def _gate(self, m: EdgeModel, req: GateRequest, key: GateKey) -> None:
        assert m.spec.validation is not None
        gate = gate_from_spec(m.spec.validation)
        try:
            result = await run_gate(
                req.address, req.model, req.version, gate, credentials=self.client.credentials
            )
        except GateUnavailableError as err:
            log.info("validation gate of %s@%s: %s", req.model, req.version, err)
            self._gate_retry[req.model] = self.clock() + GATE_RETRY_SECONDS
            return
        except Exception:  # a bug must not leave the rollout waiting silently
            log.exception("validation gate of %s@%s", req.model, req.version)
            self._gate_retry[req.model] = self.clock() + GATE_RETRY_SECONDS
            return
        log.info(
            "validation gate of %s@%s on %s: %s",
            req.model,
            req.version,
            req.node,
            "passed" if result.passed else f"failed: {result.message}",
        )
        self._verdicts[req.model] = (key, GateVerdict(req.version, result.passed, result.message))

    def _autoscale(self, pool: InferencePool, models: Sequence[EdgeModel]) -> list[Event]:
        """Each model's replica count from its queue depth and rate (or `kubectl scale`)."""
        events = []
        now = self.clock()
        for m in models:
            if m.spec.pool != pool.metadata.name:
                continue
            name = m.metadata.name
            serving = self.rollout_memory(m).stable_version or m.spec.version
            ready = [
                o
                for n in self.nodes.values()
                if n.in_pool
                for o in n.models
                if o.name == name and o.version == serving and o.ready
            ]
            metrics = (
                ScaleMetrics(
                    queue_depth=sum(o.queue_depth for o in ready) / len(ready),
                    request_rate=sum(o.request_rate for o in ready),
                    capacity_fps=sum(o.capacity_fps for o in ready) or None,
                )
                if ready
                else None
            )
            current = self.replicas.get(name, m.spec.replicas.target())
            decision = decide_replicas(
                policy_from_spec(m.spec),
                current,
                metrics,
                self._scale_state.get(name, ScaleState()),
                now,
            )
            self._scale_state[name] = decision.state
            self.replicas[name] = decision.replicas
            if decision.changed:
                events.append(Event("EdgeModel", name, "Normal", "Scaled", decision.reason))
        return events

    async def _act(self, pool: InferencePool, plan: PoolPlan) -> None:
        ns = pool.metadata.namespace
        for u in plan.unloads:
            try:
                await self.client.unload(u.address, u.model, u.version)
            except grpc.aio.AioRpcError as err:
                log.warning("unload %s@%s on %s: %s", u.model, u.version, u.node, err.details())
                continue
            await self.sink.event(
                ns,
                Event("EdgeModel", u.model, "Normal", "Unloaded",
                      f"unloaded {u.model}@{u.version} from {u.node}"),
            )  # fmt: skip
        limit = pool.spec.max_concurrent_loads_per_node
        now = self.clock()
        for ld in plan.loads:
            key = (ld.node, ld.model, ld.version)
            if key in self._inflight:
                continue
            busy = sum(1 for k in self._inflight if k[0] == ld.node)
            if busy >= limit or self._backoff.get(key, _Backoff()).not_before > now:
                continue
            self._inflight[key] = asyncio.create_task(self._load(ns, ld))

    async def _load(self, ns: str, ld: Load) -> None:
        key = (ld.node, ld.model, ld.version)
        try:
            public_key = ""
            if ld.public_key_ref:
                public_key = await self.resolve_public_key(ns, ld.public_key_ref)
            req = control_pb2.LoadModelRequest(
                name=ld.model,
                version=ld.version,
                uri=ld.artifact.uri,
                sha256=ld.artifact.sha256,
                signature=ld.signature,
                public_key=public_key,
                format=ld.artifact.format,
                cache_ttl_seconds=ld.cache_ttl_seconds,
                adapters=[
                    control_pb2.AdapterArtifact(name=a.name, uri=a.uri, sha256=a.sha256)
                    for a in ld.adapters
                ],
            )
            what = "adapters " + ",".join(a.name for a in ld.adapters) if ld.adapters_only else ""
            await self.sink.event(
                ns,
                Event("EdgeModel", ld.model, "Normal", "Loading",
                      f"loading {ld.model}@{ld.version} {what or f'({ld.artifact.accelerator})'}"
                      f" on {ld.node}"),
            )  # fmt: skip
            status = await self.client.load(ld.address, req)
            missing = sorted({a.name for a in ld.adapters} - set(status.adapters))
            if status.state == control_pb2.MODEL_STATE_READY and missing:
                # The base serves; a refused adapter is retried after the backoff.
                reason = f"adapters {', '.join(missing)} refused: {status.reason}"
            elif status.state == control_pb2.MODEL_STATE_READY:
                self._backoff.pop(key, None)
                await self.sink.event(
                    ns,
                    Event("EdgeModel", ld.model, "Normal", "Loaded",
                          f"{ld.model}@{ld.version} ready on {ld.node}"),
                )  # fmt: skip
                return
            else:
                reason = status.reason or "load failed"
        except (grpc.aio.AioRpcError, LookupError) as err:
            reason = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
        finally:
            self._inflight.pop(key, None)
        b = self._backoff.setdefault(key, _Backoff())
        b.attempts += 1
        b.not_before = self.clock() + min(2.0**b.attempts, 60.0)
        await self.sink.event(
            ns,
            Event("EdgeModel", ld.model, "Warning", "LoadFailed",
                  f"{ld.model}@{ld.version} on {ld.node}: {reason} "
                  f"(retry in {2**b.attempts:.0f}s)"),
        )  # fmt: skip

    async def _push_routes(self, pool: InferencePool, plan: PoolPlan) -> None:
        routes = tuple(plan.routes)
        if routes != self._routes:
            self._routes = routes
            self._generation += 1
        table = routing_table(pool, routes, self._generation)
        for n in self.nodes.values():
            if not n.up or self._pushed.get(n.name) == self._generation:
                continue
            try:
                await self.client.set_routing(n.address, table)
                self._pushed[n.name] = self._generation
            except grpc.aio.AioRpcError as err:
                log.info("routing table to %s: %s", n.name, err.code().name)

    async def _publish(
        self, pool: InferencePool, models: Sequence[EdgeModel], plan: PoolPlan
    ) -> None:
        ns = pool.metadata.namespace
        for ev in plan.events:
            key = f"event/{ev.kind}/{ev.name}/{ev.reason}"
            if self._published.get(key) != ev.message:
                self._published[key] = ev.message
                await self.sink.event(ns, ev)
        for name, status in plan.model_status.items():
            body = status.model_dump_json(
                exclude={"conditions": {"__all__": {"last_transition_time"}}}
            )
            if self._published.get(f"em/{name}") != body:
                self._published[f"em/{name}"] = body
                await self.sink.model_status(ns, name, status)
        body = plan.pool_status.model_dump_json(
            exclude={
                "conditions": {"__all__": {"last_transition_time"}},
                "nodes": {"__all__": {"last_seen"}},
            }
        )
        if self._published.get("pool") != body:
            self._published["pool"] = body
            await self.sink.pool_status(ns, pool.metadata.name, plan.pool_status)

    async def close(self) -> None:
        tasks = [*self._inflight.values(), *(t for _, t in self._gate_tasks.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def routing_table(
    pool: InferencePool, routes: Sequence[Route], generation: int
) -> control_pb2.RoutingTable:
    """The table every agent of the pool gets: peers per model version, weights, fallback."""
    spec = pool.spec
    table = control_pb2.RoutingTable(
        generation=generation,
        queue_limit=spec.routing.queue_limit,
        retries=spec.routing.retries,
        timeout_ms=spec.routing.timeout_ms,
        policy=spec.routing.policy,
        hedge_after_percentile=spec.routing.hedge_after_percentile or 0.0,
    )
    for r in routes:
        table.routes.append(
            control_pb2.Route(
                model=r.model,
                version=r.version,
                cache_ttl_seconds=r.cache_ttl_seconds,
                cloud_fallback=r.cloud_fallback,
                weight=r.weight,
                endpoints=[
                    control_pb2.Endpoint(
                        node=e.node,
                        address=e.address,
                        weight=e.weight,
                        adapters=e.adapters,
                        adapter_slots_free=e.adapter_slots_free,
                        adapters_known=e.adapters_known,
                    )
                    for e in r.endpoints
                ],
                escalation_output=r.escalation_output,
                escalation_threshold=r.escalation_threshold,
                escalation_model=r.escalation_model,
                escalation_cloud=r.escalation_cloud,
            )
        )
    if spec.cloud_fallback is not None:
        cf = spec.cloud_fallback
        table.cloud.CopyFrom(
            control_pb2.CloudFallback(
                endpoint=cf.endpoint,
                token_file=(
                    f"/var/run/hatswarm/cloud-token/{cf.token_secret_ref.key}"
                    if cf.token_secret_ref
                    else ""
                ),
                max_share=cf.max_share,
                price_per_1k_usd=cf.price_per1k_usd,
                tls=cf.tls,
            )
        )
    return table
