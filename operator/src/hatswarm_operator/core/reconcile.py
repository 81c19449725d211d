"""One pool's reconciliation as a pure function: (specs, observed nodes) -> what to do.

This is the control loop both adapters share: the kopf operator feeds it objects from the
Kubernetes API, `hatswarm up` feeds it manifests and local agent processes. It is level-based:
the current placement is read from what the agents report, so a restarted operator converges
without duplicate loads. It decides; `control.runtime` acts (with backoff and per-node load
limits).

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

`plan_pool` runs the steps in order: decide each model's rollout, place its versions, then
loads, unloads, routes, validation gates and statuses, each a function below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.edgemodel import Artifact
from hatswarm_operator.core import adapterplan
from hatswarm_operator.core import placement as pl
from hatswarm_operator.core.inventory import ModelState, NodeState, pool_members
from hatswarm_operator.core.plan import (
    AdapterRef,
    PoolPlan,
    ReplicaLoad,
    ReplicaUnload,
    ResourceEvent,
    Route,
    backend_for,
    endpoint_for,
    load_options,
)
from hatswarm_operator.core.rolloutplan import (
    GateRequest,
    ModelRollout,
    RolloutContext,
    attempt_key,
    decide_model_rollout,
    memory_from_status,
    split_unit,
    unit_name,
)
from hatswarm_operator.core.slo import SLO_MET, slo_event, slo_verdict, stored_verdict
from hatswarm_operator.core.status import model_status, pool_status

PRESENT = (ModelState.READY, ModelState.LOADING)
"""States in which a replica counts as being on its node (no new load is sent)."""

AdapterPlan = dict[tuple[str, str, str], tuple[str, ...]]
"""(model, version, node) -> the adapters that replica carries."""


@dataclass(frozen=True)
class PoolView:
    """One reconcile's inputs, sorted out once: the pool's models and its answering members."""

    pool: InferencePool
    models: Sequence[EdgeModel]
    """The pool's EdgeModels, by name."""
    nodes: Sequence[NodeState]
    members: Sequence[NodeState]
    wanted: Mapping[str, int]
    """Replicas each model should have (the autoscaler's count, else its spec's)."""

    def spec_of(self, name: str) -> EdgeModel:
        return next(m for m in self.models if m.metadata.name == name)

    @cached_property
    def holding(self) -> Mapping[str, Sequence[NodeState]]:
        """Members by the models they report (any version or state), in member order."""
        out: dict[str, list[NodeState]] = {}
        for n in self.members:
            for name in dict.fromkeys(o.name for o in n.models):
                out.setdefault(name, []).append(n)
        return out

    def members_with(self, name: str) -> Sequence[NodeState]:
        """The members that report `name`: what a per-model step needs to look at (a few
        nodes, where scanning every member for every model costs models x nodes a tick)."""
        return self.holding.get(name, ())


def plan_pool(
    pool: InferencePool,
    models: Sequence[EdgeModel],
    nodes: Sequence[NodeState],
    now: float,
    replicas: dict[str, int] | None = None,
    rollouts: Mapping[str, RolloutContext] | None = None,
    slo: Mapping[str, bool] | None = None,
) -> PoolPlan:
    """Decide placement, loads, unloads, routes, statuses and Events for one pool.

    `replicas` overrides each model's replica count (the autoscaler's decision); by default a
    model gets `spec.replicas.target()`. `rollouts` holds what the loop knows of each model's
    rollout (its memory, the gate's verdict, the step's metrics); a model without an entry
    starts from its status. `slo` is the last SLO verdict the loop judged for each model (the
    previous plan's `slo`); a model without an entry starts from its stored SLOMet condition.
    Each model's versions (stable, canary, under validation) come from
    :func:`rollout.decide_rollout` and are placed, loaded, routed and reported side by side.
    """
    mine = sorted(
        (m for m in models if m.spec.pool == pool.metadata.name), key=lambda m: m.metadata.name
    )
    view = PoolView(
        pool,
        mine,
        nodes,
        pool_members(pool, nodes),
        {
            m.metadata.name: (replicas or {}).get(m.metadata.name, m.spec.replicas.target())
            for m in mine
        },
    )
    rolls = {
        m.metadata.name: decide_model_rollout(
            m,
            (rollouts or {}).get(m.metadata.name) or RolloutContext(memory_from_status(m.status)),
            view.wanted[m.metadata.name],
            view.members_with(m.metadata.name),
            now,
        )
        for m in mine
    }
    placement, held = place_versions(view, rolls)
    plan = PoolPlan(placement=placement)
    plan.loads, desired_on = plan_loads(view, rolls, placement, held)
    plan.unloads = plan_unloads(view, rolls, desired_on)
    plan.routes = plan_routes(view, rolls, placement, plan.unloads)
    plan.gates = plan_gates(view, rolls)
    report_status(view, rolls, plan, now, slo or {})
    return plan


def place_versions(
    view: PoolView, rolls: Mapping[str, ModelRollout]
) -> tuple[pl.Placement, dict[str, set[str]]]:
    """Place each version the rollouts want as a unit of its own; (placement by model name,
    versions held where they run). A version whose artifacts are unknown (a stable version
    from before stableArtifacts) is held where it runs, never placed anew."""
    units: list[pl.Model] = []
    current: dict[str, list[str]] = {}
    held: dict[str, set[str]] = {}
    for m in view.models:
        name = m.metadata.name
        roll = rolls[name]
        for ld in roll.decision.loads:
            arts = roll.artifacts.get(ld.version, ())
            if not arts:
                held.setdefault(name, set()).add(ld.version)
                continue
            holders = view.members_with(name)
            unit = _placement_unit(m, ld.version, arts, ld.replicas, holders)
            units.append(unit)
            current[unit.name] = [
                n.name
                for n in holders
                if (o := n.model(name, ld.version)) is not None and o.state in PRESENT
            ]
    raw = pl.place(
        [
            pl.Node(n.name, n.accelerator, n.memory_mib, n.npu_contexts, dict(n.labels))
            for n in view.members
        ],
        units,
        current,
    )
    caps = sorted({n.memory_cap for n in view.members if n.memory_cap})
    placement = pl.Placement(
        replicas=tuple(replace(r, model=split_unit(r.model)[0]) for r in raw.replicas),
        unplaced=tuple(
            replace(u, model=split_unit(u.model)[0], message=u.with_caps(caps))
            for u in raw.unplaced
        ),
    )
    return placement, held


def _placement_unit(
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
            pl.Artifact(a.accelerator, a.format, a.uri, a.sha256, a.throughput_fps, a.memory_mi_b)
            for a in artifacts
        ),
        replicas=replicas,
        memory_mib=spec.resources.memory_mi_b,
        npu_contexts=spec.resources.npu_contexts,
        node_selector=dict(spec.placement.node_selector),
        spread_key=spec.placement.spread_key,
        fps_by_node=fps_by_node,
        task=spec.task,
    )


def plan_loads(
    view: PoolView,
    rolls: Mapping[str, ModelRollout],
    placement: pl.Placement,
    held: Mapping[str, set[str]],
) -> tuple[list[ReplicaLoad], dict[str, set[tuple[str, str]]]]:
    """Loads for placed replicas a node does not have (ready or loading) yet, and for ready
    ones whose adapter set is not the planned one (the same load again, with the new set).
    Also returns what each node should keep: node -> {(model, version)}."""
    by_name = {n.name: n for n in view.nodes}
    carry = adapter_plans(view.models, placement, view.members)
    loads: list[ReplicaLoad] = []
    desired_on: dict[str, set[tuple[str, str]]] = {}
    for r in placement.replicas:
        desired_on.setdefault(r.node, set()).add((r.model, r.version))
        node = by_name[r.node]
        obs = node.model(r.model, r.version)
        m = view.spec_of(r.model)
        wanted_adapters = carry.get((r.model, r.version, r.node), ())
        by_adapter = {a.name: a for a in m.spec.adapters}
        refs = tuple(
            AdapterRef(a, by_adapter[a].uri, by_adapter[a].sha256) for a in wanted_adapters
        )
        update = obs is not None and obs.ready and sorted(obs.adapters) != sorted(wanted_adapters)
        if obs is not None and obs.state in PRESENT and not update:
            continue
        art = next(
            (
                a
                for a in rolls[r.model].artifacts.get(r.version, ())
                if a.accelerator == r.artifact.accelerator
            ),
            None,
        )
        signature = art.signature if art is not None else None
        loads.append(
            ReplicaLoad(
                node=r.node,
                address=node.address,
                model=r.model,
                version=r.version,
                artifact=r.artifact,
                cache_ttl_seconds=m.spec.cache.ttl_seconds if m.spec.cache.enabled else 0,
                signature=signature.value if signature else "",
                public_key_ref=signature.public_key_ref if signature else None,
                adapters=refs,
                adapters_only=update,
                backend=backend_for(m.spec.task, r.artifact.accelerator, r.artifact.format),
                options=load_options(m.spec.task, r.artifact.format),
            )
        )
    for name, versions in held.items():
        for n in view.members:
            for o in n.models:
                if o.name == name and o.version in versions and o.state in PRESENT:
                    desired_on.setdefault(n.name, set()).add((name, o.version))
    return loads, desired_on


def plan_unloads(
    view: PoolView,
    rolls: Mapping[str, ModelRollout],
    desired_on: Mapping[str, set[tuple[str, str]]],
) -> list[ReplicaUnload]:
    """What an answering node has but should not. Never the last ready replica of a version
    that is still wanted (its replacement must be ready first), and a version the rollout
    retires only once another version serves the model (or it is the canary that failed, or
    Recreate unloads first)."""
    ready_count: dict[tuple[str, str], int] = {}
    for n in view.members:
        for o in n.models:
            if o.ready and o.name in rolls:
                ready_count[(o.name, o.version)] = ready_count.get((o.name, o.version), 0) + 1
    serving = {
        name: any(ready_count.get((name, v), 0) > 0 for v, w in r.decision.weights.items() if w)
        for name, r in rolls.items()
    }
    unloads: list[ReplicaUnload] = []
    for n in view.nodes:
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
            unloads.append(ReplicaUnload(n.name, n.address, o.name, o.version))
            if owner is not None and o.ready and n.in_pool:
                ready_count[(o.name, o.version)] -= 1
    return unloads


def plan_routes(
    view: PoolView,
    rolls: Mapping[str, ModelRollout],
    placement: pl.Placement,
    unloads: Sequence[ReplicaUnload],
) -> list[Route]:
    """Per version with a share of the traffic, every member with it ready, weighted by
    measured throughput; the version's share is the route's weight. A canary without a ready
    replica gets no route (its share goes to the stable version). Replicas about to be
    unloaded are left out, so peers stop sending to them first."""
    weight = {(r.model, r.version, r.node): r.weight for r in placement.replicas}
    leaving = {(u.model, u.version, u.node) for u in unloads}
    routes: list[Route] = []
    for m in view.models:
        name = m.metadata.name
        decision = rolls[name].decision
        for version, share in sorted(decision.weights.items()):
            if share <= 0:
                continue
            endpoints = tuple(
                endpoint_for(n, o, max(weight.get((name, version, n.name), 0.0), 1.0))
                for n in view.members_with(name)
                if (o := n.model(name, version)) is not None
                and o.ready
                and (name, version, n.name) not in leaving
            )
            if not endpoints and version != decision.stable_version:
                continue
            esc = m.spec.escalation
            cloud = m.spec.cloud_fallback
            routes.append(
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
                    cloud_model=cloud.cloud_model or "",
                    escalate_long_prompts=cloud.long_prompts,
                    escalation_min_mean_logprob=(
                        cloud.min_mean_logprob if cloud.min_mean_logprob is not None else 0.0
                    ),
                    escalation_logprob_tokens=(
                        cloud.judge_tokens if cloud.min_mean_logprob is not None else 0
                    ),
                )
            )
    return routes


def plan_gates(view: PoolView, rolls: Mapping[str, ModelRollout]) -> list[GateRequest]:
    """The validation gate runs once the version under validation is ready on a member."""
    gates: list[GateRequest] = []
    for m in view.models:
        c = rolls[m.metadata.name].decision.canary
        if c is None or c.phase != "Validating":
            continue
        host = next(
            (
                n
                for n in view.members_with(m.metadata.name)
                if (o := n.model(m.metadata.name, c.version)) and o.ready
            ),
            None,
        )
        if host is not None:
            gates.append(
                GateRequest(m.metadata.name, c.version, host.name, host.address, attempt_key(c))
            )
    return gates


def report_status(
    view: PoolView,
    rolls: Mapping[str, ModelRollout],
    plan: PoolPlan,
    now: float,
    slo: Mapping[str, bool],
) -> None:
    """Fill in the plan's statuses, Events and each model's rollout and SLO memory."""
    unplaced: dict[str, list[pl.Unplaced]] = {}
    for u in plan.placement.unplaced:
        unplaced.setdefault(u.model, []).append(u)
    for m in view.models:
        name = m.metadata.name
        roll = rolls[name]
        plan.rollouts[name] = roll.memory()
        plan.model_status[name] = model_status(
            m,
            view.wanted[name],
            plan.placement,
            view.members_with(name),
            next(iter(unplaced.get(name, [])), None),
            roll,
            [r for r in plan.routes if r.model == name],
            now,
        )
        for u in unplaced.get(name, []):
            plan.events.append(ResourceEvent("EdgeModel", name, "Warning", u.reason, u.message))
        judged = next((c for c in plan.model_status[name].conditions if c.type == SLO_MET), None)
        last = slo[name] if name in slo else stored_verdict(m.status.conditions if m.status else [])
        flip = slo_event(name, last, judged)
        if flip is not None:
            plan.transitions.append(flip)
        verdict = slo_verdict(last, judged) if judged is not None else None
        if verdict is not None:
            plan.slo[name] = verdict
        for ev in roll.decision.events:
            plan.rollout_events.append(
                ResourceEvent("EdgeModel", name, ev.type, ev.reason, ev.message)
            )
    plan.pool_status = pool_status(
        view.pool, view.models, view.nodes, view.members, now, placed_memory(view, plan.placement)
    )


def placed_memory(view: PoolView, placement: pl.Placement) -> dict[str, int]:
    """node -> MiB the replicas placed on it take (their artifact's memoryMiB, else the
    model's resources.memoryMiB), as placement counted them against the node's budget."""
    declared = {m.metadata.name: m.spec.resources.memory_mi_b for m in view.models}
    out: dict[str, int] = {}
    for r in placement.replicas:
        mib = declared[r.model] if r.artifact.memory_mib is None else r.artifact.memory_mib
        out[r.node] = out.get(r.node, 0) + mib
    return out


def adapter_plans(
    models: Sequence[EdgeModel], placement: pl.Placement, members: Sequence[NodeState]
) -> AdapterPlan:
    """(model, version, node) -> the adapters that replica carries (adapterplan).

    Shares are the requests per adapter the model's replicas measured (any version); slots
    are what each node reported for the version (the agent's default before it reported).
    """
    out: AdapterPlan = {}
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
