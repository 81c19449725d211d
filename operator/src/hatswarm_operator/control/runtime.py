"""The acting half of the control loop: probe agents, plan (pure), then load/unload/route.

`PoolRuntime.tick` is called on the pool's probe interval by either adapter (a kopf daemon or
`hatswarm up`). Loads run as background tasks, at most `maxConcurrentLoadsPerNode` per node,
with exponential backoff per (node, model, version) after a failure, so one bad artifact never
stalls the loop or hammers a node.

Probes and routing-table pushes fan out to every node with at most `fan_out` calls in flight
(each with the agent client's deadline), so a thousand agents probed every second neither
floods the event loop with a thousand coroutines at once nor waits on them one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import grpc
from pydantic import BaseModel

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import SecretKeyRef
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus, PoolCost
from hatswarm_operator.control import converters
from hatswarm_operator.control import metrics as operator_metrics
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.rollouts import RolloutTracker
from hatswarm_operator.core.autoscale import (
    ScaleMetrics,
    ScaleState,
    decide_replicas,
    policy_from_spec,
)
from hatswarm_operator.core.inventory import (
    ModelObs,
    ModelState,
    NodeReport,
    NodeState,
    agrees,
    observe,
    selects,
    suspect,
)
from hatswarm_operator.core.plan import PoolPlan, ReplicaLoad, ResourceEvent, Route
from hatswarm_operator.core.reconcile import plan_pool
from hatswarm_operator.core.rollout import ACTIVE
from hatswarm_operator.core.slo import SLO_MET
from hatswarm_operator.core.status import (
    ModelTokens,
    live_model_cost_per1k,
    live_model_tokens,
    live_pool_cost,
)
from hatswarm_operator.finops import attribution
from hatswarm_operator.finops import metrics as cost_metrics

log = logging.getLogger("hatswarm.loop")

COST_STATUS_SECONDS = 30.0
"""How often the live cost figures and other live measurements in status change (the gauges
move every tick)."""
MODEL_METRICS: dict[str, Any] = {
    "request_rate": True,
    "p99_latency_ms": True,
    "cost_per1k_usd": True,
    "generation": True,
}
POOL_METRICS: dict[str, Any] = {
    "nodes": {
        "__all__": {
            "last_seen",
            "queue_depth",
            "temperature_c",
            "watts",
            "active_sequences",
            "tokens_per_second",
            "cloud_requests",
        }
    },
    "capacity": {"inferences_per_second"},
}

LIVE_CONDITIONS = frozenset({SLO_MET})
"""Conditions whose message quotes live measurements (the TTFT p99 against its target): a
new figure alone is a live measurement too; a new status or reason is a change."""


def _without_live_messages(status: BaseModel) -> BaseModel:
    conditions = getattr(status, "conditions", None)
    if not conditions or not any(c.type in LIVE_CONDITIONS for c in conditions):
        return status
    kept = [
        c.model_copy(update={"message": ""}) if c.type in LIVE_CONDITIONS else c for c in conditions
    ]
    return status.model_copy(update={"conditions": kept})


PublicKeyResolver = Callable[[str, SecretKeyRef], Awaitable[str]]
"""(namespace, the Secret key holding it) -> an artifact signature's public key."""


class Sink(Protocol):
    """Where decisions become visible: Kubernetes status + Events, or the local terminal."""

    async def model_status(self, namespace: str, name: str, status: EdgeModelStatus) -> None: ...

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None: ...

    async def event(self, namespace: str, event: ResourceEvent) -> None: ...


@dataclass
class _Backoff:
    attempts: int = 0
    not_before: float = 0.0


async def _no_keys(namespace: str, ref: SecretKeyRef) -> str:
    raise LookupError(f"no public key resolver for {ref.name}/{ref.key}")


HEARTBEAT_S = 2.0
"""Status streams: the agent sends at least this often (a heartbeat when nothing changed)."""
LIVE_S = 5.0
"""Status streams: live measurements alone (rates, queues, temperatures) at most this often."""
STREAM_SLACK_S = 1.0
"""A streamed status may have been on its way this long: it describes the node as it was at
least this much before it arrived (what the loop did since stays in its own notes)."""
RESYNC_S = 10.0
"""A tick with nothing new to learn reuses the last plan (`_quiet_key`); a full plan is made at
least this often anyway (time alone moves some decisions: backoffs, autoscale windows)."""
UNSUPPORTED_RETRY_S = 300.0
"""An agent that answered UNIMPLEMENTED (older than WatchNodeStatus) is probed; its stream is
tried again after this long (it may have been upgraded)."""


@dataclass
class _Watch:
    """One node's status stream."""

    address: str
    task: asyncio.Task[None] | None = None
    live: bool = False  # a message arrived and the stream has not broken since
    retry_at: float = 0.0  # loop time after which a new stream may be opened


T = TypeVar("T")
R = TypeVar("R")
FAN_OUT = 64
"""Agent calls in flight at once per pool (probes, routing tables)."""


async def fan_out(items: Sequence[T], call: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    """`call` on every item, at most `limit` at a time, results in order.

    A few workers take the items in turn (rather than one task per item): the cost per item
    stays flat however many there are.
    """
    results: dict[int, R] = {}
    cursor = iter(range(len(items)))

    async def worker() -> None:
        for i in cursor:
            results[i] = await call(items[i])

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
    return [results[i] for i in range(len(items))]


def _same(a: tuple[Any, ...], b: tuple[Any, ...] | None) -> bool:
    """Two quiet keys: the same objects (identity: comparing a thousand nodes' contents would
    cost what it saves; the key holds them, so no id is reused) and replica counts."""
    if b is None:
        return False
    pool, models, nodes, replicas = a
    return (
        pool is b[0]
        and replicas == b[3]
        and len(models) == len(b[1])
        and all(x is y for x, y in zip(models, b[1], strict=True))
        and len(nodes) == len(b[2])
        and all(x is y for x, y in zip(nodes, b[2], strict=True))
    )


class PoolRuntime:
    """Live state of one pool: its nodes, loads in flight, backoffs, last pushed routes."""

    def __init__(
        self,
        client: AgentClient,
        sink: Sink,
        *,
        clock: Callable[[], float] = time.time,
        resolve_public_key: PublicKeyResolver = _no_keys,
        fan_out: int = FAN_OUT,
    ) -> None:
        self.client = client
        self.fan_out = fan_out
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
        self._pushed: dict[str, tuple[int, float]] = {}  # node -> (generation, when)
        self._flagged: dict[str, int] = {}  # node -> a foreign generation already reported
        self._changes: list[tuple[NodeState, NodeState]] = []
        self._acted: dict[str, dict[tuple[str, str], tuple[ModelState | None, float]]] = {}
        self.probe_rounds: deque[float] = deque(maxlen=600)
        """Durations of `probe_forever`'s rounds (each should take about the interval)."""
        self._published: dict[str, tuple[str, str, float]] = {}  # key -> (full, steady, when)
        self._events: dict[str, str] = {}
        # Each model's last SLO verdict, as posted: flips are judged against it (core.slo).
        self._slo: dict[str, bool] = {}
        self._scale_state: dict[str, ScaleState] = {}
        self.cost_ledger = attribution.CostLedger()
        self._cost_status: (
            tuple[
                float,
                PoolCost,
                dict[str, float | None],
                dict[str, ModelTokens],
            ]
            | None
        ) = None
        self.failovers = 0
        self.rollouts = RolloutTracker(clock, lambda: self.client.credentials)
        self._node_notes: dict[str, tuple[str, str]] = {}
        self._reported_at: dict[str, float] = {}  # node -> its last report holds from then
        self._watches: dict[str, _Watch] = {}
        self.heartbeat_s = HEARTBEAT_S
        self.live_s = LIVE_S
        self.stream_breaks = 0
        self._quiet: tuple[Any, ...] | None = None
        self._planned_at = float("-inf")
        self.plan_seconds: deque[float] = deque(maxlen=600)
        """Durations of the full plans (ticks that reused the last plan are not in it)."""
        self.plan_cpu_seconds: deque[float] = deque(maxlen=600)
        """CPU time of the loop's thread in each full plan (apart from a busy machine's waits;
        the awaits inside count only their own CPU)."""

    # --- inventory -----------------------------------------------------------------------

    def set_nodes(self, nodes: Sequence[NodeState]) -> None:
        """Replace Kubernetes' (or the local) view of the nodes, keeping probe history."""
        fresh: dict[str, NodeState] = {}
        for n in nodes:
            old = self.nodes.get(n.name)
            if old is None or old.address != n.address:
                self._reported_at.pop(n.name, None)
            else:
                n = replace(
                    old,
                    labels=n.labels,
                    k8s_ready=n.k8s_ready,
                    schedulable=n.schedulable,
                    memory_mib=n.memory_mib,
                    memory_cap=n.memory_cap,
                    npu_contexts=n.npu_contexts,
                )
            fresh[n.name] = n
        self.nodes = fresh
        for name in [k for k in self._reported_at if k not in fresh]:
            del self._reported_at[name]

    async def probe(
        self, threshold: int, names: Collection[str] | None = None
    ) -> list[tuple[NodeState, NodeState]]:
        """Probe every node (or those in `names`), `fan_out` at a time, each answer folded into
        the node as it is when the answer comes back; return (before, after) for nodes that
        went in or out of the pool. The changes are also kept for the next tick's Events."""

        async def one(n: NodeState) -> tuple[NodeState, NodeState] | None:
            asked = self.clock()  # the answer says how the node was at this moment
            try:
                report, error = converters.node_report(await self.client.status(n.address)), ""
            except grpc.aio.AioRpcError as err:
                report, error = None, err.code().name
            return self._fold(n.name, n.address, report, asked, threshold, error)

        targets = [n for n in self.nodes.values() if names is None or n.name in names]
        changed = [c for c in await fan_out(targets, one, self.fan_out) if c is not None]
        self._changes += changed
        return changed

    def _fold(
        self,
        name: str,
        address: str,
        report: NodeReport | None,
        at: float,
        threshold: int,
        error: str = "",
    ) -> tuple[NodeState, NodeState] | None:
        """One report (None: a failed probe) into the node; (before, after) when it went in or
        out of the pool."""
        current = self.nodes.get(name)
        if current is None or current.address != address:
            return None  # gone or moved while the call was out: not this node any more
        after = self.nodes[name] = observe(current, report, at, threshold, error)
        if report is not None:
            self._reported_at[name] = at
        return (current, after) if current.in_pool != after.in_pool else None

    def _note(self, node: str, model: str, version: str, state: ModelState | None) -> None:
        """Remember what this loop just did on a node (None: unloaded it)."""
        self._acted.setdefault(node, {})[(model, version)] = (state, self.clock())

    def planning_view(self) -> list[NodeState]:
        """The nodes as last probed, plus what this loop did on them since.

        Probes run apart from the ticks, so a node's last answer may predate a load this
        loop sent it a moment ago (or its completion, or an unload): planning on that answer
        alone would load the same replica again, or somewhere else. Until a probe asked after
        the action, the node is seen with it; after that, the agent's word is all there is.
        A streamed status counts from `STREAM_SLACK_S` before it arrived; one that already
        agrees with the action (the model there, or gone) ends the note at once.
        """
        out = []
        for n in self.nodes.values():
            acted = self._acted.get(n.name)
            if acted:
                seen = self._reported_since(n)
                for key in [
                    k for k, (state, at) in acted.items() if at < seen or agrees(n, *k, state)
                ]:
                    del acted[key]
                if not acted:
                    del self._acted[n.name]
                else:
                    models = {(o.name, o.version): o for o in n.models}
                    for (model, version), (state, _) in acted.items():
                        if state is None:
                            models.pop((model, version), None)
                        elif (model, version) not in models:
                            models[(model, version)] = ModelObs(model, version, state)
                    n = replace(n, models=tuple(models.values()))
            out.append(n)
        return out

    def _reported_since(self, n: NodeState) -> float:
        """From when the node's last report is known to hold (a probe: when it was asked)."""
        fallback = n.last_seen if n.last_seen is not None else float("-inf")
        return self._reported_at.get(n.name, fallback)

    def unprobed(self) -> list[str]:
        """Nodes never probed yet (new to the loop): a tick probes these itself."""
        return [n.name for n in self.nodes.values() if n.last_seen is None and n.failures == 0]

    async def probe_forever(
        self,
        threshold: Callable[[], int],
        interval: Callable[[], float],
        on_change: Callable[[], None],
        slices: int = 10,
        *,
        watch: bool = True,
    ) -> None:
        """Follow every node: over its status stream (`watch`), else by a probe once per
        `interval()`, spread over it in `slices` groups.

        A streamed node costs nothing while idle: the agent sends its status when it changes
        and a heartbeat every `heartbeat_s`, the channel's HTTP/2 keepalive sees a dead or
        frozen agent within ~2 s and a refused or reset connection at once; a broken stream
        is confirmed by one probe before the node leaves (`inventory.suspect`). Nodes without
        a live stream (an older agent answering UNIMPLEMENTED, a node down or not yet
        reached) are probed: a thousand probes a second arrive a hundred at a time, never in
        one burst. Any node that goes in or out of the pool calls `on_change()` (the adapter
        kicks a tick). Runs until cancelled; the streams end with it.
        """
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                try:
                    if not await self._probe_round(threshold, interval, on_change, slices, watch):
                        continue
                except Exception:  # a round that fails must not end the following of every node
                    log.exception("probe round failed; the next starts in one interval")
                    await asyncio.sleep(max(0.1, interval()))
                    continue
                self.probe_rounds.append(loop.time() - started)
        finally:
            await self._stop_watches()

    async def _probe_round(
        self,
        threshold: Callable[[], int],
        interval: Callable[[], float],
        on_change: Callable[[], None],
        slices: int,
        watch: bool,
    ) -> bool:
        """One round over every node; False when there were none (no round to count)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if watch:
            self._watch_all(threshold, interval, on_change)
        names = list(self.nodes)
        if not names:
            await asyncio.sleep(0.1)  # no nodes yet: look again soon
            return False
        groups = max(1, min(slices, len(names)))
        for i in range(groups):
            # The nodes may change while the round sleeps (a relist drops a Pod's node).
            part = {
                n
                for n in names[i * len(names) // groups : (i + 1) * len(names) // groups]
                if n in self.nodes and not self._streamed(n)
            }
            if part and await self.probe(threshold(), part):
                on_change()
            pause = started + (i + 1) * interval() / groups - loop.time()
            await asyncio.sleep(max(0.0, pause))
        return True

    def streamed(self) -> int:
        """Nodes followed over a live status stream now."""
        return sum(1 for n in self.nodes if self._streamed(n))

    def _streamed(self, name: str) -> bool:
        w, node = self._watches.get(name), self.nodes.get(name)
        return w is not None and node is not None and w.live and w.address == node.address

    def _watch_all(
        self,
        threshold: Callable[[], int],
        interval: Callable[[], float],
        on_change: Callable[[], None],
    ) -> None:
        """A stream for every node that has none (and may retry); none for nodes gone."""
        now = asyncio.get_running_loop().time()
        for name in [n for n, w in self._watches.items() if n not in self.nodes]:
            w = self._watches.pop(name)
            if w.task is not None:
                w.task.cancel()
        for node in self.nodes.values():
            old = self._watches.get(node.name)
            if old is not None and old.address != node.address and old.task is not None:
                old.task.cancel()
            w = old if old is not None and old.address == node.address else _Watch(node.address)
            self._watches[node.name] = w
            if (w.task is None or w.task.done()) and now >= w.retry_at:
                w.task = asyncio.create_task(
                    self._follow(node.name, w, threshold, interval, on_change),
                    name=f"status stream of {node.name}",
                )

    async def _follow(
        self,
        name: str,
        w: _Watch,
        threshold: Callable[[], int],
        interval: Callable[[], float],
        on_change: Callable[[], None],
    ) -> None:
        """Read one node's stream until it breaks; a break of a live stream makes the node a
        suspect, confirmed (or cleared) by one probe at once."""
        loop = asyncio.get_running_loop()
        silence = self.heartbeat_s + max(interval(), 1.0)
        code = ""
        try:
            async with asyncio.timeout_at(loop.time() + silence) as quiet:
                async for update in self.client.watch(w.address, self.heartbeat_s, self.live_s):
                    quiet.reschedule(loop.time() + silence)
                    w.live = True
                    if update.HasField("status"):
                        now = self.clock()
                        report = converters.node_report(update.status)
                        change = self._fold(name, w.address, report, now, threshold())
                        self._reported_at[name] = now - STREAM_SLACK_S
                        if change is not None:
                            self._changes.append(change)
                            on_change()
            code = "stream ended"
        except grpc.aio.AioRpcError as err:
            code = err.code().name
        except TimeoutError:
            code = "status stream silent"
        live, w.live = w.live, False
        w.retry_at = loop.time() + (
            UNSUPPORTED_RETRY_S if code == "UNIMPLEMENTED" else max(interval(), 0.5)
        )
        if not live:
            return  # never up: the probes follow this node
        self.stream_breaks += 1
        log.info("status stream of %s broke (%s): confirming with a probe", name, code)
        node = self.nodes.get(name)
        if node is None or node.address != w.address:
            return
        self.nodes[name] = suspect(node, threshold())
        if await self.probe(threshold(), {name}):
            on_change()

    async def _stop_watches(self) -> None:
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        self._watches.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one reconcile ---------------------------------------------------------------------

    async def tick(
        self, pool: InferencePool, models: Sequence[EdgeModel], *, probe: bool = True
    ) -> PoolPlan:
        """One reconcile. `probe=False` when `probe_forever` keeps the nodes fresh: then only
        nodes never probed yet are probed here, so nothing is planned on no data."""
        ns = pool.metadata.namespace
        threshold = pool.spec.failure_detection.failure_threshold
        if probe:
            await self.probe(threshold)
        elif fresh := self.unprobed():
            await self.probe(threshold, set(fresh))
        changes, self._changes = self._changes, []
        for before, after in changes:
            if after.in_pool:
                await self.sink.event(
                    ns,
                    ResourceEvent("InferencePool", pool.metadata.name, "Normal", "NodeJoined",
                          f"node {after.name} ({after.accelerator}) joined the pool"),
                )  # fmt: skip
            else:
                self.failovers += 1
                await self.sink.event(
                    ns,
                    ResourceEvent("InferencePool", pool.metadata.name, "Warning", "NodeLost",
                          f"node {after.name} left the pool: {after.out_reason}; "
                          f"re-placing {len([o for o in before.models if o.ready])} replicas"),
                )  # fmt: skip
        for ev in self._node_warnings(pool):
            await self.sink.event(ns, ev)
        for ev in self._autoscale(pool, models):
            await self.sink.event(ns, ev)
        quiet = self._quiet_key(pool, models)
        if quiet is not None and _same(quiet, self._quiet) and self.last_plan is not None:
            await self._push_routes(pool, self.last_plan)  # a push that failed is tried again
            return self.last_plan
        started, cpu = time.perf_counter(), time.thread_time()
        self._planned_at = self.clock()
        mine = [m for m in models if m.spec.pool == pool.metadata.name]
        # The key is of the nodes planned on: a report that lands while this tick awaits its
        # actions below must make the next tick plan again, not look quiet.
        planned_on = tuple(self.nodes.values())
        nodes = self.planning_view()
        plan = plan_pool(
            pool,
            models,
            nodes,
            self.clock(),
            self.replicas,
            self.rollouts.contexts(mine, nodes),
            self._slo,
        )
        self._cost(pool, mine, plan)
        self.last_plan = plan
        self.rollouts.remember(mine, plan, nodes)
        # Routes first: they no longer list what is about to be unloaded.
        await self._push_routes(pool, plan)
        await self._act(pool, plan)
        for ev in plan.rollout_events:
            await self.sink.event(ns, ev)
        self.rollouts.run_gates(mine, plan)
        await self._publish(pool, models, plan)
        self._quiet = self._quiet_key(pool, models, planned_on)
        self.plan_seconds.append(time.perf_counter() - started)
        self.plan_cpu_seconds.append(time.thread_time() - cpu)
        return plan

    def _quiet_key(
        self,
        pool: InferencePool,
        models: Sequence[EdgeModel],
        nodes: tuple[NodeState, ...] | None = None,
    ) -> tuple[Any, ...] | None:
        """What the next plan depends on, when the last plan left nothing in motion (None when
        it did, or a full plan is due): the same key means the same plan.

        Nodes are immutable and replaced on every report that changed anything (a heartbeat
        replaces nothing), the pool and models are the caches' objects (new ones when their
        resources changed), the replica counts come from autoscaling. Loads in flight, notes
        of what this loop did, backoffs, rollouts, gates and a full plan older than
        `RESYNC_S` all mean: plan again.
        """
        last = self.last_plan
        if (
            last is None
            or last.loads
            or last.unloads
            or last.gates
            or last.rollout_events
            or self._inflight
            or self._acted
            or self._backoff
            or any(
                r.canary is not None and r.canary.phase in ACTIVE for r in last.rollouts.values()
            )
            or self.clock() - self._planned_at >= RESYNC_S
        ):
            return None
        return (
            pool,
            tuple(models),
            tuple(self.nodes.values()) if nodes is None else nodes,
            tuple(sorted(self.replicas.items())),
        )

    def _node_warnings(self, pool: InferencePool) -> list[ResourceEvent]:
        """A Warning on the pool when an agent cannot open its backend (BackendUnavailable) or
        its chip contradicts the node's label (AcceleratorMismatch): once per new message."""
        out = []
        for n in self.nodes.values():
            notes = (n.backend_error, n.accelerator_mismatch) if n.up else ("", "")
            if notes == self._node_notes.get(n.name, ("", "")):
                continue
            self._node_notes[n.name] = notes
            backend_error, mismatch = notes
            if backend_error:
                out.append(
                    ResourceEvent("InferencePool", pool.metadata.name, "Warning",
                                  "BackendUnavailable",
                                  f"node {n.name}: {backend_error}; nothing is placed there")
                )  # fmt: skip
            if mismatch:
                out.append(
                    ResourceEvent("InferencePool", pool.metadata.name, "Warning",
                                  "AcceleratorMismatch", mismatch)
                )  # fmt: skip
        return out

    # --- cost ------------------------------------------------------------------------------

    def _cost(self, pool: InferencePool, models: Sequence[EdgeModel], plan: PoolPlan) -> None:
        """Live cost: charge this window to models by NPU seconds; measured energy if known.

        The gauges move every tick; the figures in status only every `COST_STATUS_SECONDS`
        so a busy pool does not rewrite its status each second.
        """
        selected = [n for n in self.nodes.values() if selects(pool.spec.node_selector, n.labels)]
        now = self.clock()
        live = attribution.account(
            self.cost_ledger,
            attribution.pool_cost_inputs(pool),
            attribution.node_samples(selected),
            now,
        )
        operator_metrics.cost().publish(pool.metadata.name, live, cost_metrics.showback_of(models))
        if self._cost_status is None or now - self._cost_status[0] >= COST_STATUS_SECONDS:
            self._cost_status = (
                now,
                live_pool_cost(live),
                live_model_cost_per1k(live),
                live_model_tokens(live),
            )
        _, pool_cost, per1k, tokens = self._cost_status
        plan.pool_status.cost = pool_cost
        for name, st in plan.model_status.items():
            st.cost_per1k_usd = per1k.get(name)
            counted = tokens.get(name)
            if counted is not None:
                st.edge_tokens = counted.edge_tokens
                st.cloud_tokens = counted.cloud_tokens
                st.cloud_token_spend_usd = counted.cloud_token_spend_usd

    def _autoscale(self, pool: InferencePool, models: Sequence[EdgeModel]) -> list[ResourceEvent]:
        """Each model's replica count from its queue depth and rate (or `kubectl scale`)."""
        events = []
        now = self.clock()
        ready_by: dict[tuple[str, str], list[ModelObs]] = {}  # one pass over the nodes
        for n in self.nodes.values():
            if n.in_pool:
                for o in n.models:
                    if o.ready:
                        ready_by.setdefault((o.name, o.version), []).append(o)
        for m in models:
            if m.spec.pool != pool.metadata.name:
                continue
            name = m.metadata.name
            serving = self.rollouts.memory(m).stable_version or m.spec.version
            ready = ready_by.get((name, serving), [])
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
                events.append(ResourceEvent("EdgeModel", name, "Normal", "Scaled", decision.reason))
        return events

    async def _act(self, pool: InferencePool, plan: PoolPlan) -> None:
        ns = pool.metadata.namespace
        for u in plan.unloads:
            try:
                await self.client.unload(u.address, u.model, u.version)
            except grpc.aio.AioRpcError as err:
                log.warning("unload %s@%s on %s: %s", u.model, u.version, u.node, err.details())
                continue
            self._note(u.node, u.model, u.version, None)
            await self.sink.event(
                ns,
                ResourceEvent("EdgeModel", u.model, "Normal", "Unloaded",
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

    async def _load(self, ns: str, ld: ReplicaLoad) -> None:
        key = (ld.node, ld.model, ld.version)
        try:
            public_key = ""
            if ld.public_key_ref is not None:
                public_key = await self.resolve_public_key(ns, ld.public_key_ref)
            req = converters.load_request(ld, public_key)
            what = "adapters " + ",".join(a.name for a in ld.adapters) if ld.adapters_only else ""
            await self.sink.event(
                ns,
                ResourceEvent("EdgeModel", ld.model, "Normal", "Loading",
                      f"loading {ld.model}@{ld.version} {what or f'({ld.artifact.accelerator})'}"
                      f" on {ld.node}"),
            )  # fmt: skip
            self._note(ld.node, ld.model, ld.version, ModelState.LOADING)
            status = await self.client.load(ld.address, req)
            state = converters.model_state(status.state)
            if state in (ModelState.READY, ModelState.LOADING):
                self._note(ld.node, ld.model, ld.version, state)
            else:
                self._acted.get(ld.node, {}).pop((ld.model, ld.version), None)
            missing = sorted({a.name for a in ld.adapters} - set(status.adapters))
            if state is ModelState.READY and missing:
                # The base serves; a refused adapter is retried after the backoff.
                reason = f"adapters {', '.join(missing)} refused: {status.reason}"
            elif state is ModelState.READY:
                self._backoff.pop(key, None)
                await self.sink.event(
                    ns,
                    ResourceEvent("EdgeModel", ld.model, "Normal", "Loaded",
                          f"{ld.model}@{ld.version} ready on {ld.node}"),
                )  # fmt: skip
                return
            else:
                reason = status.reason or "load failed"
        except (grpc.aio.AioRpcError, LookupError) as err:
            reason = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
            self._acted.get(ld.node, {}).pop((ld.model, ld.version), None)
        finally:
            self._inflight.pop(key, None)
        b = self._backoff.setdefault(key, _Backoff())
        b.attempts += 1
        b.not_before = self.clock() + min(2.0**b.attempts, 60.0)
        await self.sink.event(
            ns,
            ResourceEvent("EdgeModel", ld.model, "Warning", "LoadFailed",
                  f"{ld.model}@{ld.version} on {ld.node}: {reason} "
                  f"(retry in {2**b.attempts:.0f}s)"),
        )  # fmt: skip

    def _needs_table(self, n: NodeState) -> bool:
        """Whether `n` must be sent the current table: never sent, or its own report (taken
        after the last push) names another generation (it restarted, or something else set
        its table)."""
        pushed = self._pushed.get(n.name)
        if pushed is None or pushed[0] != self._generation:
            return True
        generation, when = pushed
        reported_after_push = self._reported_since(n) > when
        return reported_after_push and n.routing_generation != generation

    async def _push_routes(self, pool: InferencePool, plan: PoolPlan) -> None:
        """Push the plan's table to every agent that does not hold it (comparing what each
        reports with what was pushed); an agent holding a newer generation than this control
        plane ever made is flagged (Warning `RoutingTableMismatch`) and overtaken."""
        routes = tuple(plan.routes)
        if routes != self._routes:
            self._routes = routes
            self._generation += 1
        for n in self.nodes.values():
            if n.up and n.routing_generation > self._generation:
                if self._flagged.get(n.name) != n.routing_generation:
                    self._flagged[n.name] = n.routing_generation
                    await self.sink.event(
                        pool.metadata.namespace,
                        ResourceEvent("InferencePool", pool.metadata.name, "Warning",
                              "RoutingTableMismatch",
                              f"node {n.name} holds routing generation {n.routing_generation}, "
                              f"newer than this control plane's {self._generation}: "
                              "replacing it"),
                    )  # fmt: skip
                self._generation = n.routing_generation + 1
        members = {n.name: n.address for n in self.nodes.values() if n.up}
        stale = [n for n in self.nodes.values() if n.up and self._needs_table(n)]
        if not stale:
            return
        table = converters.routing_table(pool, routes, self._generation, members)

        async def push(n: NodeState) -> None:
            try:
                await self.client.set_routing(n.address, table)
                self._pushed[n.name] = (table.generation, self.clock())
            except grpc.aio.AioRpcError as err:  # a refused table is worth a warning
                refused = err.code() == grpc.StatusCode.INVALID_ARGUMENT
                log.log(
                    logging.WARNING if refused else logging.INFO,
                    "routing table to %s: %s %s", n.name, err.code().name, err.details(),
                )  # fmt: skip

        await fan_out(stale, push, self.fan_out)

    def _changed(self, key: str, status: BaseModel, volatile: dict[str, Any]) -> bool:
        """Should this status be written? When anything but timestamps changed, yes; when
        only live measurements moved (request rates, latencies, queue depths, temperatures),
        at most every `COST_STATUS_SECONDS`: with traffic they move every tick, and a
        thousand-node pool's status is not rewritten each second for that."""
        stamps: dict[str, Any] = {"conditions": {"__all__": {"last_transition_time"}}}
        full = status.model_dump_json(exclude=stamps)
        steady = _without_live_messages(status).model_dump_json(exclude={**stamps, **volatile})
        now = self.clock()
        last = self._published.get(key)
        if last is not None and last[0] == full:
            return False
        if last is not None and last[1] == steady and now - last[2] < COST_STATUS_SECONDS:
            return False
        self._published[key] = (full, steady, now)
        return True

    async def _publish(
        self, pool: InferencePool, models: Sequence[EdgeModel], plan: PoolPlan
    ) -> None:
        ns = pool.metadata.namespace
        for ev in plan.events:
            key = f"event/{ev.kind}/{ev.name}/{ev.reason}"
            if self._events.get(key) != ev.message:
                self._events[key] = ev.message
                await self.sink.event(ns, ev)
        for ev in plan.transitions:
            await self.sink.event(ns, ev)
        self._slo = dict(plan.slo)  # posted: the next plan judges flips against these
        for name, status in plan.model_status.items():
            if self._changed(f"em/{name}", status, MODEL_METRICS):
                with self._unpublished_on_error(f"em/{name}"):
                    await self.sink.model_status(ns, name, status)
        if self._changed("pool", plan.pool_status, POOL_METRICS):
            with self._unpublished_on_error("pool"):
                await self.sink.pool_status(ns, pool.metadata.name, plan.pool_status)

    @contextlib.contextmanager
    def _unpublished_on_error(self, key: str) -> Iterator[None]:
        """A status write that failed (the API server down a moment) is not published: the
        next tick writes it again instead of waiting for the next change."""
        try:
            yield
        except BaseException:
            self._published.pop(key, None)
            raise

    async def close(self) -> None:
        tasks = [*self._inflight.values(), *self.rollouts.tasks()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
