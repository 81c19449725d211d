"""One pool's reconciliation as a pure function: (specs, observed nodes) -> what to do.

This is the control loop both adapters share: the kopf operator feeds it objects from the
Kubernetes API, `hatswarm up` feeds it manifests and local agent processes. It is level-based:
the current placement is read from what the agents report, so a restarted operator converges
without duplicate loads. It decides; `loop.py` acts (with backoff and per-node load limits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from hatswarm_operator import placement as pl
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import Condition
from hatswarm_operator.api.edgemodel import EdgeModelStatus, ModelPlacement
from hatswarm_operator.api.inferencepool import (
    InferencePoolStatus,
    PoolCapacity,
    PoolCost,
    PoolNode,
)
from hatswarm_operator.cost import (
    DeviceCostInputs,
    cloud_per_inference_from_per_1k,
    cost_per_inference,
    fleet_annual_cost,
    inferences_per_year_from_rate,
)
from hatswarm_operator.inventory import FAILED, LOADING, READY, STATE_NAMES, NodeState


@dataclass(frozen=True)
class Load:
    node: str
    address: str
    model: str
    version: str
    artifact: pl.Artifact
    cache_ttl_seconds: int = 0
    signature: str = ""
    public_key_ref: str = ""


@dataclass(frozen=True)
class Unload:
    node: str
    address: str
    model: str
    version: str


@dataclass(frozen=True)
class Endpoint:
    node: str
    address: str
    weight: float


@dataclass(frozen=True)
class Route:
    model: str
    version: str
    endpoints: tuple[Endpoint, ...]
    cache_ttl_seconds: int = 0
    cloud_fallback: bool = False


@dataclass(frozen=True)
class Event:
    kind: str  # "EdgeModel" or "InferencePool"
    name: str
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


@dataclass
class PoolPlan:
    placement: pl.Placement
    loads: list[Load] = field(default_factory=list)
    unloads: list[Unload] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    model_status: dict[str, EdgeModelStatus] = field(default_factory=dict)
    pool_status: InferencePoolStatus = field(default_factory=InferencePoolStatus)
    events: list[Event] = field(default_factory=list)


def _now_iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, ok: bool | None, reason: str, message: str, now: float, generation: int
) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=_now_iso(now),
        observed_generation=generation,
    )


def merge_conditions(old: Sequence[Condition], new: Sequence[Condition]) -> list[Condition]:
    """Keep lastTransitionTime when a condition's status did not change (metav1 semantics)."""
    before = {c.type: c for c in old}
    out = []
    for c in new:
        prev = before.get(c.type)
        if prev is not None and prev.status == c.status:
            c = c.model_copy(update={"last_transition_time": prev.last_transition_time})
        out.append(c)
    return out


def _to_placement_model(m: EdgeModel, replicas: int, nodes: Sequence[NodeState]) -> pl.Model:
    spec = m.spec
    fps_by_node = {
        n.name: obs.capacity_fps
        for n in nodes
        if (obs := n.model(m.metadata.name, spec.version)) is not None and obs.capacity_fps > 0
    }
    return pl.Model(
        name=m.metadata.name,
        version=spec.version,
        artifacts=tuple(
            pl.Artifact(a.accelerator, a.format, a.uri, a.sha256, a.throughput_fps)
            for a in spec.artifacts
        ),
        replicas=replicas,
        memory_mib=spec.resources.memory_mi_b,
        npu_contexts=spec.resources.npu_contexts,
        node_selector=dict(spec.placement.node_selector),
        spread_key=spec.placement.spread_key,
        fps_by_node=fps_by_node,
    )


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pool_members(pool: InferencePool, nodes: Sequence[NodeState]) -> list[NodeState]:
    """Nodes whose labels match the pool, whose agent answers and that Kubernetes schedules."""
    return [
        n
        for n in nodes
        if n.in_pool
        and _selects(pool.spec.node_selector, n.labels)
        and n.accelerator in pool.spec.accelerators
    ]


def plan_pool(
    pool: InferencePool,
    models: Sequence[EdgeModel],
    nodes: Sequence[NodeState],
    now: float,
    replicas: dict[str, int] | None = None,
) -> PoolPlan:
    """Decide placement, loads, unloads, routes, statuses and Events for one pool.

    `replicas` overrides each model's replica count (the autoscaler's decision); by default a
    model gets `spec.replicas.target()`.
    """
    members = pool_members(pool, nodes)
    by_name = {n.name: n for n in nodes}
    mine = sorted(
        (m for m in models if m.spec.pool == pool.metadata.name), key=lambda m: m.metadata.name
    )
    wanted = {
        m.metadata.name: (replicas or {}).get(m.metadata.name, m.spec.replicas.target())
        for m in mine
    }
    current = {
        m.metadata.name: [
            n.name
            for n in members
            if (o := n.model(m.metadata.name, m.spec.version)) is not None
            and o.state in (READY, LOADING)
        ]
        for m in mine
    }
    placement = pl.place(
        [
            pl.Node(n.name, n.accelerator, n.memory_mib, n.npu_contexts, dict(n.labels))
            for n in members
        ],
        [_to_placement_model(m, wanted[m.metadata.name], members) for m in mine],
        current,
    )
    plan = PoolPlan(placement=placement)
    spec_of = {m.metadata.name: m for m in mine}

    # Loads: placed replicas the node does not have (ready or loading) yet.
    desired_on: dict[str, set[tuple[str, str]]] = {}
    for r in placement.replicas:
        desired_on.setdefault(r.node, set()).add((r.model, r.version))
        node = by_name[r.node]
        obs = node.model(r.model, r.version)
        if obs is None or obs.state not in (READY, LOADING):
            m = spec_of[r.model]
            art = m.spec.artifact_for(r.artifact.accelerator)
            plan.loads.append(
                Load(
                    node=r.node,
                    address=node.address,
                    model=r.model,
                    version=r.version,
                    artifact=r.artifact,
                    cache_ttl_seconds=m.spec.cache.ttl_seconds if m.spec.cache.enabled else 0,
                    signature=art.signature.value if art and art.signature else "",
                    public_key_ref=(
                        f"{art.signature.public_key_ref.name}/{art.signature.public_key_ref.key}"
                        if art and art.signature
                        else ""
                    ),
                )
            )

    # Unloads: what an answering node has but should not, never the last ready replica of a
    # model that is still wanted (its replacement must be ready first).
    ready_count: dict[str, int] = {}
    for n in members:
        for o in n.models:
            if o.ready and o.name in spec_of and o.version == spec_of[o.name].spec.version:
                ready_count[o.name] = ready_count.get(o.name, 0) + 1
    for n in nodes:
        if not n.up:
            continue
        keep = desired_on.get(n.name, set()) if n.in_pool else set()
        for o in n.models:
            if (o.name, o.version) in keep:
                continue
            still_wanted = o.name in spec_of
            is_current = still_wanted and o.version == spec_of[o.name].spec.version
            if still_wanted and o.ready:
                others = ready_count.get(o.name, 0) - (1 if is_current and n.in_pool else 0)
                if not is_current:
                    # an old version keeps serving until the new one is ready somewhere
                    others = ready_count.get(o.name, 0)
                if others < 1:
                    continue
            plan.unloads.append(Unload(n.name, n.address, o.name, o.version))
            if is_current and n.in_pool:
                ready_count[o.name] -= 1

    # Routes: every member with the version ready, weighted by its measured throughput.
    weight = {(r.model, r.node): r.weight for r in placement.replicas}
    for m in mine:
        name, version = m.metadata.name, m.spec.version
        endpoints = tuple(
            Endpoint(n.name, n.address, max(weight.get((name, n.name), 0.0), 1.0))
            for n in members
            if (o := n.model(name, version)) is not None and o.ready
        )
        plan.routes.append(
            Route(
                name,
                version,
                endpoints,
                cache_ttl_seconds=m.spec.cache.ttl_seconds if m.spec.cache.enabled else 0,
                cloud_fallback=m.spec.cloud_fallback.allowed,
            )
        )

    unplaced = {u.model: u for u in placement.unplaced}
    for m in mine:
        plan.model_status[m.metadata.name] = _model_status(
            m, wanted[m.metadata.name], placement, members, unplaced.get(m.metadata.name), now
        )
        u = unplaced.get(m.metadata.name)
        if u is not None:
            plan.events.append(Event("EdgeModel", m.metadata.name, "Warning", u.reason, u.message))
    plan.pool_status = _pool_status(pool, mine, nodes, members, now)
    return plan


def _model_status(
    m: EdgeModel,
    desired: int,
    placement: pl.Placement,
    members: Sequence[NodeState],
    unplaced: pl.Unplaced | None,
    now: float,
) -> EdgeModelStatus:
    name, version, gen = m.metadata.name, m.spec.version, m.metadata.generation
    placements: list[ModelPlacement] = []
    ready = 0
    failures: list[str] = []
    rate = 0.0
    p99 = 0.0
    for n in members:
        o = n.model(name, version)
        if o is None:
            continue
        state = STATE_NAMES.get(o.state, "Loading")
        if state not in ("Loading", "Ready", "Failed", "Unloading"):
            state = "Loading"
        placements.append(
            ModelPlacement(
                node=n.name,
                version=version,
                state=state,
                message=o.reason or None,
            )
        )
        if o.ready:
            ready += 1
            rate += o.request_rate
            p99 = max(p99, o.p99_ms)
        elif o.state == FAILED:
            failures.append(f"{n.name}: {o.reason}")
    for r in placement.replicas:
        if r.model == name and not any(p.node == r.node for p in placements):
            placements.append(ModelPlacement(node=r.node, version=version, state="Loading"))
    placements.sort(key=lambda p: p.node)

    verify_failed = [f for f in failures if "sha256" in f or "signature" in f or "digest" in f]
    conds = [
        condition(
            "Ready",
            ready >= desired and ready > 0,
            "ReplicasReady" if ready >= desired and ready > 0 else "ReplicasNotReady",
            f"{ready}/{desired} replicas ready",
            now,
            gen,
        ),
        condition(
            "Progressing",
            ready < desired and unplaced is None and not failures,
            "Loading" if ready < desired else "Converged",
            f"{len(placements) - ready} replicas loading" if ready < desired else "up to date",
            now,
            gen,
        ),
        condition(
            "Degraded",
            unplaced is not None or bool(failures),
            unplaced.reason
            if unplaced is not None
            else ("LoadFailed" if failures else "AsExpected"),
            unplaced.message if unplaced is not None else ("; ".join(failures) or ""),
            now,
            gen,
        ),
        condition(
            "ArtifactVerified",
            False if verify_failed else (True if ready else None),
            "VerificationFailed" if verify_failed else ("Verified" if ready else "Pending"),
            "; ".join(verify_failed),
            now,
            gen,
        ),
    ]
    old = m.status.conditions if m.status else []
    if ready >= desired and ready > 0:
        phase = "Ready"
    elif unplaced is not None or verify_failed:
        phase = "Failed" if ready == 0 and (verify_failed or unplaced) else "Degraded"
    else:
        phase = "Progressing" if desired > 0 else "Ready"
    return EdgeModelStatus(
        phase=phase,
        observed_generation=gen,
        replicas=len(placements),
        desired_replicas=desired,
        ready_replicas=ready,
        ready=f"{ready}/{desired}",
        version=version if ready else (m.status.version if m.status else None),
        stable_version=version if ready else (m.status.stable_version if m.status else None),
        placements=placements,
        conditions=merge_conditions(old, conds),
        request_rate=round(rate, 3),
        p99_latency_ms=round(p99, 3) if ready else None,
        selector=f"hatswarm.io/model={name}",
    )


def _pool_status(
    pool: InferencePool,
    models: Sequence[EdgeModel],
    nodes: Sequence[NodeState],
    members: Sequence[NodeState],
    now: float,
) -> InferencePoolStatus:
    member_names = {n.name for n in members}
    selected = [n for n in nodes if _selects(pool.spec.node_selector, n.labels)]
    pool_nodes = [
        PoolNode(
            name=n.name,
            accelerator=n.accelerator,
            ready=n.name in member_names,
            address=n.address,
            models=sorted(f"{o.name}@{o.version}" for o in n.models if o.ready),
            queue_depth=sum(o.queue_depth for o in n.models),
            temperature_c=n.temperature_c,
            watts=n.watts,
            last_seen=_now_iso(n.last_seen) if n.last_seen else None,
            reason=n.out_reason or None,
        )
        for n in selected
    ]
    by_acc: dict[str, int] = {}
    for n in members:
        by_acc[n.accelerator] = by_acc.get(n.accelerator, 0) + 1
    ips = sum(o.capacity_fps for n in members for o in n.models if o.ready)
    c = pool.spec.cost
    inputs = DeviceCostInputs(
        device_price_usd=Decimal(str(c.device_price_usd)),
        hat_price_usd=Decimal(str(c.hat_price_usd)),
        lifespan_years=Decimal(str(c.lifespan_years)),
        watts=Decimal(str(c.watts)),
        electricity_usd_per_kwh=Decimal(str(c.electricity_usd_per_kwh)),
        mgmt_usd_per_device_year=Decimal(str(c.mgmt_usd_per_device_year)),
        connectivity_usd_per_device_year=Decimal(str(c.connectivity_usd_per_device_year)),
    )
    devices = max(len(selected), 1)
    fleet = fleet_annual_cost(inputs, devices, Decimal(str(c.shared_ops_usd_per_year)))
    rate = sum(o.request_rate for n in members for o in n.models)
    measured = (
        cost_per_inference(fleet.total_usd_per_year, inferences_per_year_from_rate(rate))
        if rate > 0
        else None
    )
    cloud = pool.spec.cloud_fallback
    cost = PoolCost(
        per_device_year_usd=round(float(fleet.per_device_usd_per_year), 2),
        fleet_per_year_usd=round(float(fleet.total_usd_per_year), 2),
        measured_per_inference_usd=float(measured) if measured is not None else None,
        per1k_usd=round(float(measured * 1000), 6) if measured is not None else None,
        cloud_per1k_usd=(
            float(cloud_per_inference_from_per_1k(cloud.price_per1k_usd) * 1000) if cloud else None
        ),
        energy_source="nameplate",
    )
    gen = pool.metadata.generation
    conds = [
        condition(
            "Ready",
            bool(members),
            "NodesReady" if members else "NoNodes",
            f"{len(members)}/{len(selected)} nodes ready",
            now,
            gen,
        )
    ]
    old = pool.status.conditions if pool.status else []
    return InferencePoolStatus(
        observed_generation=gen,
        nodes_ready=len(members),
        nodes_total=len(selected),
        models=len(models),
        nodes=pool_nodes,
        capacity=PoolCapacity(
            nodes_by_accelerator=by_acc,
            model_slots_free=sum(n.npu_contexts for n in members)
            - sum(len([o for o in n.models if o.ready]) for n in members),
            inferences_per_second=round(ips, 2),
        ),
        conditions=merge_conditions(old, conds),
        cost=cost,
    )
