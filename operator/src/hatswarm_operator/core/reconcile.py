"""One pool's reconciliation as a pure function: (specs, observed nodes) -> what to do.

This is the control loop both adapters share: the kopf operator feeds it objects from the
Kubernetes API, `hatswarm up` feeds it manifests and local agent processes. It is level-based:
the current placement is read from what the agents report, so a restarted operator converges
without duplicate loads. It decides; `loop.py` acts (with backoff and per-node load limits).

Each EdgeModel's versions come from the rollout state machine (`rollout.decide_rollout`): the
stable version, and a new `spec.version` under validation (one node, no traffic) or as a canary
(a share of the traffic, stepping up). Each version is placed as its own unit, routed with its
share as the route's weight, and the old version is unloaded only once the new one succeeded
(after a rollback, only the canary goes). The rollout's state lives in status
(`stableVersion`, `canary`, `stableArtifacts`) and in the runtime's memory.

A model's LoRA adapters go out with its loads, spread over the nodes serving each version by
`adapterplan.plan_adapters` (measured request share, each node's adapter slots); a node whose
adapter set differs from the plan gets the same LoadModel again with the new set (the base
keeps serving). Routes tell every agent which adapters each endpoint has loaded and its free
slots (for adapter-affinity routing), and carry the model's escalation rule (cascade).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import Condition
from hatswarm_operator.api.edgemodel import Artifact, EdgeModelStatus, ModelPlacement
from hatswarm_operator.api.inferencepool import (
    InferencePoolStatus,
    PoolCapacity,
    PoolCost,
    PoolNode,
)
from hatswarm_operator.core import adapterplan
from hatswarm_operator.core import placement as pl
from hatswarm_operator.core.inventory import (
    FAILED,
    LOADING,
    READY,
    STATE_NAMES,
    ModelObs,
    NodeState,
)
from hatswarm_operator.core.rollout import ACTIVE as ACTIVE_PHASES
from hatswarm_operator.core.rollout import FAILED as FAILED_PHASES
from hatswarm_operator.core.rollout import (
    GateVerdict,
    RolloutDecision,
    RolloutInput,
    canary_to_status,
    decide_rollout,
)
from hatswarm_operator.core.rollout import policy_from_spec as rollout_policy
from hatswarm_operator.core.rolloutplan import (
    GateRequest,
    RolloutContext,
    RolloutMemory,
    attempt_key,
    memory_from_status,
    split_unit,
    unit_name,
)
from hatswarm_operator.finops.tco import (
    DeviceCostInputs,
    cloud_per_inference_from_per_1k,
    cost_per_inference,
    fleet_annual_cost,
    inferences_per_year_from_rate,
)


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter artifact sent with a load."""

    name: str
    uri: str
    sha256: str


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
    adapters: tuple[AdapterRef, ...] = ()
    adapters_only: bool = False
    """The base is loaded already: only its adapter set changes."""


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
    adapters: tuple[str, ...] = ()
    """Adapters loaded there now (for adapter-affinity routing)."""
    adapter_slots_free: int = 0
    adapters_known: tuple[str, ...] = ()
    """Adapters it can serve, loaded or not."""


def endpoint_for(node: NodeState, obs: ModelObs, weight: float) -> Endpoint:
    """A route endpoint with the adapters the node reported for this model version."""
    return Endpoint(
        node.name,
        node.address,
        weight,
        adapters=obs.resident_adapters,
        adapter_slots_free=max(0, obs.adapter_slots - len(obs.resident_adapters))
        if obs.adapters
        else 0,
        adapters_known=obs.adapters,
    )


@dataclass(frozen=True)
class Route:
    model: str
    version: str
    endpoints: tuple[Endpoint, ...]
    cache_ttl_seconds: int = 0
    cloud_fallback: bool = False
    weight: float = 0.0
    """The version's share of the model's traffic (percent; relative across its routes)."""
    escalation_output: str = ""
    escalation_threshold: float = 0.0
    escalation_model: str = ""
    escalation_cloud: bool = False


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
    """Events about a lasting state (posted when their message changes)."""
    rollout_events: list[Event] = field(default_factory=list)
    """Rollout transitions (posted every time: each happens once)."""
    rollouts: dict[str, RolloutMemory] = field(default_factory=dict)
    """Each model's rollout state after this reconcile (the next one starts from it)."""
    gates: list[GateRequest] = field(default_factory=list)
    """Validation gates that can run now (their version is ready on a member)."""


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


def _to_placement_model(
    m: EdgeModel,
    version: str,
    artifacts: Sequence[Artifact],
    replicas: int,
    nodes: Sequence[NodeState],
) -> pl.Model:
    """One version of a model as its own placement unit (``model@version``)."""
    spec = m.spec
    fps_by_node = {
        n.name: obs.capacity_fps
        for n in nodes
        if (obs := n.model(m.metadata.name, version)) is not None and obs.capacity_fps > 0
    }
    return pl.Model(
        name=unit_name(m.metadata.name, version),
        version=version,
        artifacts=tuple(
            pl.Artifact(a.accelerator, a.format, a.uri, a.sha256, a.throughput_fps)
            for a in artifacts
        ),
        replicas=replicas,
        memory_mib=spec.resources.memory_mi_b,
        npu_contexts=spec.resources.npu_contexts,
        node_selector=dict(spec.placement.node_selector),
        spread_key=spec.placement.spread_key,
        fps_by_node=fps_by_node,
    )


@dataclass(frozen=True)
class ModelRollout:
    """One model's rollout decision this reconcile, with the artifacts of each known version."""

    decision: RolloutDecision
    artifacts: Mapping[str, tuple[Artifact, ...]]

    def memory(self) -> RolloutMemory:
        """What the next reconcile starts from."""
        stable = self.decision.stable_version
        return RolloutMemory(
            stable_version=stable,
            canary=self.decision.canary,
            stable_artifacts=self.artifacts.get(stable, ()) if stable is not None else (),
        )

    def may_retire(self, version: str, serving: bool) -> bool:
        """May a ready replica of a version this decision no longer wants be unloaded now?

        Yes when something else serves the model, when it is the canary that just failed, or
        when the strategy unloads first (Recreate); otherwise it is the last thing serving.
        """
        c = self.decision.canary
        failed = c is not None and c.version == version and c.phase in FAILED_PHASES
        return serving or failed or self.decision.unload_first


def decide_model_rollout(
    m: EdgeModel,
    ctx: RolloutContext,
    replicas: int,
    members: Sequence[NodeState],
    now: float,
) -> ModelRollout:
    """Call :func:`rollout.decide_rollout` for one model with what the loop measured."""
    spec, name = m.spec, m.metadata.name
    memory = ctx.memory
    ready_new = sum(
        1 for n in members if (o := n.model(name, spec.version)) is not None and o.ready
    )
    gate = ctx.gate
    c = memory.canary
    if gate is None and c is not None and c.phase == "Validating":
        # An artifact the node refuses to verify never passes: that is the gate's verdict.
        for n in members:
            o = n.model(name, c.version)
            if o is not None and o.state == FAILED and _verification_failure(o.reason):
                gate = GateVerdict(c.version, False, f"artifact rejected on {n.name}: {o.reason}")
                break
    decision = decide_rollout(
        RolloutInput(
            version=spec.version,
            stable_version=memory.stable_version,
            canary=memory.canary,
            policy=rollout_policy(spec),
            now=now,
            replicas=replicas,
            gate=gate,
            canary_metrics=ctx.canary_metrics,
            stable_metrics=ctx.stable_metrics,
            canary_ready=ready_new,
        )
    )
    artifacts: dict[str, tuple[Artifact, ...]] = {}
    if memory.stable_version is not None and memory.stable_artifacts:
        artifacts[memory.stable_version] = tuple(memory.stable_artifacts)
    artifacts[spec.version] = tuple(spec.artifacts)
    return ModelRollout(decision, artifacts)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pool_members(pool: InferencePool, nodes: Sequence[NodeState]) -> list[NodeState]:
    """Nodes whose labels match the pool, whose agent answers and that Kubernetes schedules."""
    return [
        n
        for n in nodes
        if n.in_pool
        and selects(pool.spec.node_selector, n.labels)
        and n.accelerator in pool.spec.accelerators
    ]


def plan_pool(
    pool: InferencePool,
    models: Sequence[EdgeModel],
    nodes: Sequence[NodeState],
    now: float,
    replicas: dict[str, int] | None = None,
    rollouts: Mapping[str, RolloutContext] | None = None,
) -> PoolPlan:
    """Decide placement, loads, unloads, routes, statuses and Events for one pool.

    `replicas` overrides each model's replica count (the autoscaler's decision); by default a
    model gets `spec.replicas.target()`. `rollouts` holds what the loop knows of each model's
    rollout (its memory, the gate's verdict, the step's metrics); a model without an entry
    starts from its status. Each model's versions (stable, canary, under validation) come from
    :func:`rollout.decide_rollout` and are placed, loaded, routed and reported side by side.
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
    spec_of = {m.metadata.name: m for m in mine}
    rolls: dict[str, ModelRollout] = {}
    for m in mine:
        ctx = (rollouts or {}).get(m.metadata.name)
        if ctx is None:
            ctx = RolloutContext(memory_from_status(m.status))
        rolls[m.metadata.name] = decide_model_rollout(m, ctx, wanted[m.metadata.name], members, now)

    # Placement: each version the rollout wants is a unit of its own. A version whose
    # artifacts are unknown (a stable version from before stableArtifacts) is held where it
    # runs, never placed anew.
    units: list[pl.Model] = []
    current: dict[str, list[str]] = {}
    held: dict[str, set[str]] = {}
    for m in mine:
        name = m.metadata.name
        roll = rolls[name]
        for ld in roll.decision.loads:
            arts = roll.artifacts.get(ld.version, ())
            if not arts:
                held.setdefault(name, set()).add(ld.version)
                continue
            unit = _to_placement_model(m, ld.version, arts, ld.replicas, members)
            units.append(unit)
            current[unit.name] = [
                n.name
                for n in members
                if (o := n.model(name, ld.version)) is not None and o.state in (READY, LOADING)
            ]
    raw = pl.place(
        [
            pl.Node(n.name, n.accelerator, n.memory_mib, n.npu_contexts, dict(n.labels))
            for n in members
        ],
        units,
        current,
    )
    placement = pl.Placement(
        replicas=tuple(replace(r, model=split_unit(r.model)[0]) for r in raw.replicas),
        unplaced=tuple(replace(u, model=split_unit(u.model)[0]) for u in raw.unplaced),
    )
    plan = PoolPlan(placement=placement)
    carry = _adapter_plans(mine, placement, members)

    # Loads: placed replicas the node does not have (ready or loading) yet, and ready ones
    # whose adapter set is not the planned one (the same load again, with the new set).
    desired_on: dict[str, set[tuple[str, str]]] = {}
    for r in placement.replicas:
        desired_on.setdefault(r.node, set()).add((r.model, r.version))
        node = by_name[r.node]
        obs = node.model(r.model, r.version)
        m = spec_of[r.model]
        wanted_adapters = carry.get((r.model, r.version, r.node), ())
        by_adapter = {a.name: a for a in m.spec.adapters}
        refs = tuple(
            AdapterRef(a, by_adapter[a].uri, by_adapter[a].sha256) for a in wanted_adapters
        )
        update = obs is not None and obs.ready and sorted(obs.adapters) != sorted(wanted_adapters)
        if obs is None or obs.state not in (READY, LOADING) or update:
            art = next(
                (
                    a
                    for a in rolls[r.model].artifacts.get(r.version, ())
                    if a.accelerator == r.artifact.accelerator
                ),
                None,
            )
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
                    adapters=refs,
                    adapters_only=update,
                )
            )
    for name, versions in held.items():
        for n in members:
            for o in n.models:
                if o.name == name and o.version in versions and o.state in (READY, LOADING):
                    desired_on.setdefault(n.name, set()).add((name, o.version))

    # Unloads: what an answering node has but should not. Never the last ready replica of a
    # version that is still wanted (its replacement must be ready first), and a version the
    # rollout retires only once another version serves the model (or it is the canary that
    # failed, or Recreate unloads first).
    ready_count: dict[tuple[str, str], int] = {}
    for n in members:
        for o in n.models:
            if o.ready and o.name in spec_of:
                ready_count[(o.name, o.version)] = ready_count.get((o.name, o.version), 0) + 1
    serving = {
        name: any(ready_count.get((name, v), 0) > 0 for v, w in r.decision.weights.items() if w)
        for name, r in rolls.items()
    }
    for n in nodes:
        if not n.up:
            continue
        keep = desired_on.get(n.name, set()) if n.in_pool else set()
        for o in n.models:
            if (o.name, o.version) in keep:
                continue
            owner = rolls.get(o.name)
            if owner is not None and o.ready:
                if any(ld.version == o.version for ld in owner.decision.loads):
                    others = ready_count.get((o.name, o.version), 0) - (1 if n.in_pool else 0)
                    if others < 1:
                        continue
                elif not owner.may_retire(o.version, serving[o.name]):
                    continue
            plan.unloads.append(Unload(n.name, n.address, o.name, o.version))
            if owner is not None and o.ready and n.in_pool:
                ready_count[(o.name, o.version)] -= 1

    # Routes: per version with a share of the traffic, every member with it ready, weighted
    # by measured throughput; the version's share is the route's weight. A canary without a
    # ready replica gets no route (its share goes to the stable version).
    # Replicas about to be unloaded are left out, so peers stop sending to them first.
    weight = {(r.model, r.version, r.node): r.weight for r in placement.replicas}
    leaving = {(u.model, u.version, u.node) for u in plan.unloads}
    for m in mine:
        name = m.metadata.name
        decision = rolls[name].decision
        for version, share in sorted(decision.weights.items()):
            if share <= 0:
                continue
            endpoints = tuple(
                endpoint_for(n, o, max(weight.get((name, version, n.name), 0.0), 1.0))
                for n in members
                if (o := n.model(name, version)) is not None
                and o.ready
                and (name, version, n.name) not in leaving
            )
            if not endpoints and version != decision.stable_version:
                continue
            esc = m.spec.escalation
            plan.routes.append(
                Route(
                    name,
                    version,
                    endpoints,
                    cache_ttl_seconds=m.spec.cache.ttl_seconds if m.spec.cache.enabled else 0,
                    cloud_fallback=m.spec.cloud_fallback.allowed,
                    weight=float(share),
                    escalation_output=esc.output if esc else "",
                    escalation_threshold=esc.threshold if esc else 0.0,
                    escalation_model=(esc.target.model or "") if esc else "",
                    escalation_cloud=bool(esc.target.cloud) if esc else False,
                )
            )

    # The validation gate runs once the version under validation is ready on a member.
    for m in mine:
        c = rolls[m.metadata.name].decision.canary
        if c is None or c.phase != "Validating":
            continue
        host = next(
            (n for n in members if (o := n.model(m.metadata.name, c.version)) and o.ready), None
        )
        if host is not None:
            plan.gates.append(
                GateRequest(m.metadata.name, c.version, host.name, host.address, attempt_key(c))
            )

    unplaced: dict[str, list[pl.Unplaced]] = {}
    for u in placement.unplaced:
        unplaced.setdefault(u.model, []).append(u)
    for m in mine:
        name = m.metadata.name
        roll = rolls[name]
        plan.rollouts[name] = roll.memory()
        plan.model_status[name] = _model_status(
            m,
            wanted[name],
            placement,
            members,
            next(iter(unplaced.get(name, [])), None),
            roll,
            [r for r in plan.routes if r.model == name],
            now,
        )
        for u in unplaced.get(name, []):
            plan.events.append(Event("EdgeModel", name, "Warning", u.reason, u.message))
        for ev in roll.decision.events:
            plan.rollout_events.append(Event("EdgeModel", name, ev.type, ev.reason, ev.message))
    plan.pool_status = _pool_status(pool, mine, nodes, members, now)
    return plan


def _adapter_plans(
    models: Sequence[EdgeModel], placement: pl.Placement, members: Sequence[NodeState]
) -> dict[tuple[str, str, str], tuple[str, ...]]:
    """(model, version, node) -> the adapters that replica carries (adapterplan).

    Shares are the requests per adapter the model's replicas measured (any version); slots
    are what each node reported for the version (the agent's default before it reported).
    """
    out: dict[tuple[str, str, str], tuple[str, ...]] = {}
    by_name = {n.name: n for n in members}
    for m in models:
        names = [a.name for a in m.spec.adapters]
        if not names:
            continue
        model = m.metadata.name
        requests: dict[str, int] = {}
        for n in members:
            for o in n.models:
                if o.name == model:
                    for adapter, count in o.adapter_requests:
                        requests[adapter] = requests.get(adapter, 0) + count
        shares = adapterplan.request_shares(names, requests)
        versions = sorted({r.version for r in placement.replicas if r.model == model})
        for version in versions:
            nodes = []
            for r in placement.replicas:
                if r.model != model or r.version != version:
                    continue
                node = by_name.get(r.node)
                obs = node.model(model, version) if node is not None else None
                slots = obs.adapter_slots if obs is not None and obs.adapter_slots > 0 else 0
                nodes.append(
                    adapterplan.AdapterNode(
                        r.node,
                        slots or adapterplan.DEFAULT_SLOTS,
                        frozenset(obs.adapters) if obs is not None else frozenset(),
                    )
                )
            for node_name, carried in adapterplan.plan_adapters(names, nodes, shares).items():
                out[(model, version, node_name)] = carried
    return out


def _verification_failure(reason: str) -> bool:
    """Did a load fail because the artifact is not the one the spec names (or unsigned)?"""
    return "sha256" in reason or "signature" in reason or "digest" in reason


def _shares(routes: Sequence[Route]) -> dict[tuple[str, str], float]:
    """(node, version) -> percent of the model's traffic that replica gets."""
    total = sum(r.weight for r in routes if r.endpoints)
    out: dict[tuple[str, str], float] = {}
    if total <= 0:
        return out
    for r in routes:
        ep_total = sum(e.weight for e in r.endpoints)
        for e in r.endpoints:
            out[(e.node, r.version)] = round(100.0 * r.weight / total * e.weight / ep_total, 2)
    return out


def _model_status(
    m: EdgeModel,
    desired: int,
    placement: pl.Placement,
    members: Sequence[NodeState],
    unplaced: pl.Unplaced | None,
    roll: ModelRollout,
    routes: Sequence[Route],
    now: float,
) -> EdgeModelStatus:
    name, gen = m.metadata.name, m.metadata.generation
    decision = roll.decision
    serving = decision.stable_version
    canary = decision.canary
    active = canary is not None and canary.phase in ACTIVE_PHASES
    rolled_back = (
        canary is not None and canary.phase in FAILED_PHASES and canary.version == m.spec.version
    )
    shares = _shares(routes)
    placements: list[ModelPlacement] = []
    ready = 0
    failures: list[str] = []
    rate = 0.0
    p99 = 0.0
    for n in members:
        for o in n.models:
            if o.name != name:
                continue
            state = STATE_NAMES.get(o.state, "Loading")
            if state not in ("Loading", "Ready", "Failed", "Unloading"):
                state = "Loading"
            if o.ready and canary is not None and canary.phase == "Validating":
                state = "Validating" if o.version == canary.version else state
            placements.append(
                ModelPlacement(
                    node=n.name,
                    version=o.version,
                    state=state,
                    weight=shares.get((n.name, o.version)),
                    message=o.reason or None,
                )
            )
            if o.ready:
                rate += o.request_rate
                if o.version == serving:
                    ready += 1
                    p99 = max(p99, o.p99_ms)
            elif o.state == FAILED:
                failures.append(f"{n.name} ({o.version}): {o.reason}")
    for r in placement.replicas:
        if r.model == name and not any(
            p.node == r.node and p.version == r.version for p in placements
        ):
            placements.append(ModelPlacement(node=r.node, version=r.version, state="Loading"))
    placements.sort(key=lambda p: (p.node, p.version))
    counted = serving if serving is not None else m.spec.version

    verify_failed = [f for f in failures if _verification_failure(f)]
    if active and canary is not None:
        progressing = condition(
            "Progressing",
            True,
            "Validating" if canary.phase == "Validating" else "CanaryProgressing",
            f"{canary.version}: {canary.message or canary.phase}",
            now,
            gen,
        )
    elif rolled_back and canary is not None:
        progressing = condition(
            "Progressing", False, "RolledBack", f"{canary.version}: {canary.message}", now, gen
        )
    else:
        progressing = condition(
            "Progressing",
            ready < desired and unplaced is None and not failures,
            "Loading" if ready < desired else "Converged",
            f"{len(placements) - ready} replicas loading" if ready < desired else "up to date",
            now,
            gen,
        )
    if rolled_back and canary is not None:
        keeps = f"{serving} keeps serving" if serving is not None else "no version serves"
        degraded = condition(
            "Degraded",
            True,
            "RolledBack",
            f"{canary.version} rolled back, {keeps}: {canary.message}",
            now,
            gen,
        )
    else:
        degraded = condition(
            "Degraded",
            unplaced is not None or bool(failures),
            unplaced.reason
            if unplaced is not None
            else ("LoadFailed" if failures else "AsExpected"),
            unplaced.message if unplaced is not None else ("; ".join(failures) or ""),
            now,
            gen,
        )
    conds = [
        condition(
            "Ready",
            ready >= desired and ready > 0,
            "ReplicasReady" if ready >= desired and ready > 0 else "ReplicasNotReady",
            f"{ready}/{desired} replicas ready",
            now,
            gen,
        ),
        progressing,
        degraded,
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
    if rolled_back:
        phase = "Degraded" if ready > 0 else "Failed"
    elif ready >= desired and ready > 0:
        phase = "Progressing" if active else "Ready"
    elif unplaced is not None or verify_failed:
        phase = "Failed" if ready == 0 and (verify_failed or unplaced) else "Degraded"
    else:
        phase = "Progressing" if desired > 0 else "Ready"
    stable_artifacts = list(roll.artifacts.get(serving, ())) if serving is not None else []
    return EdgeModelStatus(
        phase=phase,
        observed_generation=gen,
        replicas=sum(1 for p in placements if p.version == counted),
        desired_replicas=desired,
        ready_replicas=ready,
        ready=f"{ready}/{desired}",
        version=serving if ready else (m.status.version if m.status else None),
        stable_version=serving,
        stable_artifacts=stable_artifacts or None,
        canary=canary_to_status(canary),
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
    selected = [n for n in nodes if selects(pool.spec.node_selector, n.labels)]
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
