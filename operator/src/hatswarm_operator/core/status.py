"""What a reconcile reports: each EdgeModel's and the InferencePool's status, from the plan.

Pure rendering of decisions already taken (`reconcile.plan_pool`): replicas and their states
per node, traffic shares, conditions (Ready, Progressing, Degraded, ArtifactVerified), the
rollout's state, and the pool's nodes, capacity and nameplate cost.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import Condition, agent_pod_selector
from hatswarm_operator.api.edgemodel import EdgeModelStatus, GenerationStatus, ModelPlacement
from hatswarm_operator.api.inferencepool import (
    InferencePoolStatus,
    PoolCapacity,
    PoolCost,
    PoolNode,
)
from hatswarm_operator.core import placement as pl
from hatswarm_operator.core.conditions import condition, merge_conditions, rfc3339
from hatswarm_operator.core.inventory import (
    GenerationObs,
    ModelState,
    NodeState,
    is_verification_failure,
    selects,
)
from hatswarm_operator.core.plan import Route
from hatswarm_operator.core.rollout import ACTIVE as ACTIVE_PHASES
from hatswarm_operator.core.rollout import FAILED as FAILED_PHASES
from hatswarm_operator.core.rollout import Canary
from hatswarm_operator.core.rolloutplan import ModelRollout, canary_to_status
from hatswarm_operator.core.slo import model_slo
from hatswarm_operator.finops.attribution import LiveCost, pool_cost_inputs
from hatswarm_operator.finops.money import rounded, significant
from hatswarm_operator.finops.tco import (
    cloud_per_inference_from_per_1k,
    cost_per_inference,
    fleet_annual_cost,
    inferences_per_year_from_rate,
)
from hatswarm_operator.finops.tokens import CLOUD, COMPLETION, EDGE, PROMPT, sum_tokens

PlacementState = Literal["Loading", "Ready", "Failed", "Unloading", "Validating"]
PLACEMENT_STATES: dict[ModelState, PlacementState] = {
    ModelState.LOADING: "Loading",
    ModelState.READY: "Ready",
    ModelState.FAILED: "Failed",
    ModelState.UNLOADING: "Unloading",
}
"""What `status.placements[].state` says per agent state (an unknown one shows as Loading)."""


def traffic_shares(routes: Sequence[Route]) -> dict[tuple[str, str], float]:
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


def model_status(
    m: EdgeModel,
    desired: int,
    placement: pl.Placement,
    members: Sequence[NodeState],
    unplaced: pl.Unplaced | None,
    roll: ModelRollout,
    routes: Sequence[Route],
    now: float,
) -> EdgeModelStatus:
    """An EdgeModel's status: its replicas where they are, conditions, phase, rollout."""
    name, gen = m.metadata.name, m.metadata.generation
    decision = roll.decision
    serving = decision.stable_version
    canary = decision.canary
    rolled_back = (
        canary is not None and canary.phase in FAILED_PHASES and canary.version == m.spec.version
    )
    placements = _placements(name, placement, members, canary, traffic_shares(routes))
    ready = 0
    failures: list[str] = []
    rate = 0.0
    p99 = 0.0
    for n in members:
        for o in n.models:
            if o.name != name:
                continue
            if o.ready:
                rate += o.request_rate
                if o.version == serving:
                    ready += 1
                    p99 = max(p99, o.p99_ms)
            elif o.state is ModelState.FAILED:
                failures.append(f"{n.name} ({o.version}): {o.reason}")
    counted = serving if serving is not None else m.spec.version
    verify_failed = [f for f in failures if is_verification_failure(f)]
    active = canary is not None and canary.phase in ACTIVE_PHASES
    conds = _model_conditions(
        canary if active else None,
        canary if rolled_back else None,
        serving,
        desired,
        ready,
        len(placements),
        unplaced,
        failures,
        verify_failed,
        now,
        gen,
    )
    generation = generation_status(
        [o.generation for n in members for o in n.models if o.name == name and o.ready]
    )
    slo = model_slo(m, generation, now)
    if slo is not None:
        conds.append(slo)
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
        p99_latency_ms=round(p99, 3) if ready and p99 > 0 else None,  # 0: nothing measured
        generation=generation,
        selector=agent_pod_selector(m.spec.pool),
    )


def generation_status(observed: Sequence[GenerationObs | None]) -> GenerationStatus | None:
    """A generative model's replicas together: sums, the slowest replica's TTFT, KV use as
    held over budget. None for a model that does not generate."""
    gens = [g for g in observed if g is not None]
    if not gens:
        return None
    budget = sum(g.kv_cache_tokens_budget for g in gens)
    p50 = max(g.ttft_p50_ms for g in gens)
    p99 = max(g.ttft_p99_ms for g in gens)
    return GenerationStatus(
        tokens_per_second=round(sum(g.tokens_per_second for g in gens), 3),
        ttft_p50_ms=round(p50, 3) if p50 > 0 else None,
        ttft_p99_ms=round(p99, 3) if p99 > 0 else None,
        active_sequences=sum(g.active_sequences for g in gens),
        sequence_slots=sum(g.max_sequences for g in gens),
        queued_prompt_tokens=sum(g.queued_prompt_tokens for g in gens),
        kv_cache_utilization=(
            round(sum(g.kv_cache_tokens_used for g in gens) / budget, 4) if budget else None
        ),
        prefix_hit_tokens=sum(g.prefix_hit_tokens for g in gens),
    )


def _placements(
    name: str,
    placement: pl.Placement,
    members: Sequence[NodeState],
    canary: Canary | None,
    shares: dict[tuple[str, str], float],
) -> list[ModelPlacement]:
    """Every replica of the model the members report, plus the placed ones not there yet."""
    placements: list[ModelPlacement] = []
    for n in members:
        for o in n.models:
            if o.name != name:
                continue
            state = PLACEMENT_STATES.get(o.state, "Loading")
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
    for r in placement.replicas:
        if r.model == name and not any(
            p.node == r.node and p.version == r.version for p in placements
        ):
            placements.append(ModelPlacement(node=r.node, version=r.version, state="Loading"))
    placements.sort(key=lambda p: (p.node, p.version))
    return placements


def _model_conditions(
    progressing_canary: Canary | None,
    rolled_back: Canary | None,
    serving: str | None,
    desired: int,
    ready: int,
    placed: int,
    unplaced: pl.Unplaced | None,
    failures: Sequence[str],
    verify_failed: Sequence[str],
    now: float,
    gen: int,
) -> list[Condition]:
    """Ready, Progressing, Degraded and ArtifactVerified. ``progressing_canary`` is the
    canary while its rollout is active, ``rolled_back`` the one of this spec that failed."""
    if progressing_canary is not None:
        c = progressing_canary
        progressing = condition(
            "Progressing",
            True,
            "Validating" if c.phase == "Validating" else "CanaryProgressing",
            f"{c.version}: {c.message or c.phase}",
            now,
            gen,
        )
    elif rolled_back is not None:
        progressing = condition(
            "Progressing",
            False,
            "RolledBack",
            f"{rolled_back.version}: {rolled_back.message}",
            now,
            gen,
        )
    else:
        progressing = condition(
            "Progressing",
            ready < desired and unplaced is None and not failures,
            "Loading" if ready < desired else "Converged",
            f"{placed - ready} replicas loading" if ready < desired else "up to date",
            now,
            gen,
        )
    if rolled_back is not None:
        keeps = f"{serving} keeps serving" if serving is not None else "no version serves"
        degraded = condition(
            "Degraded",
            True,
            "RolledBack",
            f"{rolled_back.version} rolled back, {keeps}: {rolled_back.message}",
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
    return [
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


def _as_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _node_generation(node: NodeState, field: str) -> float | None:
    """A node's generative models' `field` summed, None when it has none."""
    gens = [o.generation for o in node.models if o.generation is not None]
    if not gens:
        return None
    total = sum(getattr(g, field) for g in gens)
    return round(total, 3) if isinstance(total, float) else total


@functools.lru_cache(maxsize=16384)
def _pool_node(
    name: str,
    accelerator: str,
    ready: bool,
    address: str,
    models: tuple[str, ...],
    queue_depth: int,
    temperature_c: float | None,
    watts: float | None,
    last_seen: str | None,
    reason: str | None,
    cloud_requests: int,
    active_sequences: int | None,
    tokens_per_second: float | None,
    memory_mib: int | None = None,
    memory_used_mib: int | None = None,
) -> PoolNode:
    """One node's entry, the same object while nothing in it changed: a thousand-node pool
    builds its status every tick and a pydantic model costs tens of microseconds. (Shared:
    nothing may modify it.)"""
    return PoolNode(
        name=name,
        accelerator=accelerator,
        ready=ready,
        address=address,
        models=list(models),
        queue_depth=queue_depth,
        temperature_c=temperature_c,
        watts=watts,
        last_seen=last_seen,
        reason=reason,
        cloud_requests=cloud_requests,
        active_sequences=active_sequences,
        tokens_per_second=tokens_per_second,
        memory_mi_b=memory_mib,
        memory_used_mi_b=memory_used_mib,
    )


def pool_status(
    pool: InferencePool,
    models: Sequence[EdgeModel],
    nodes: Sequence[NodeState],
    members: Sequence[NodeState],
    now: float,
    placed_mib: Mapping[str, int] | None = None,
) -> InferencePoolStatus:
    """The pool's status: its nodes (with each one's memory budget and what the placed
    replicas take of it, `placed_mib`), capacity, nameplate cost and Ready condition."""
    member_names = {n.name for n in members}
    selected = [n for n in nodes if selects(pool.spec.node_selector, n.labels)]
    pool_nodes = [
        _pool_node(
            n.name,
            n.accelerator,
            n.name in member_names,
            n.address,
            tuple(sorted(f"{o.name}@{o.version}" for o in n.models if o.ready)),
            sum(o.queue_depth for o in n.models),
            n.temperature_c,
            n.watts,
            rfc3339(n.last_seen) if n.last_seen else None,
            n.out_reason or None,
            sum(count for _, count in n.cloud_requests),
            _as_int(_node_generation(n, "active_sequences")),
            _node_generation(n, "tokens_per_second"),
            n.memory_mib,
            (placed_mib or {}).get(n.name, 0),
        )
        for n in selected
    ]
    by_acc: dict[str, int] = {}
    for n in members:
        by_acc[n.accelerator] = by_acc.get(n.accelerator, 0) + 1
    ips = sum(o.capacity_fps for n in members for o in n.models if o.ready)
    gen = pool.metadata.generation
    conds = [
        condition(
            "Ready",
            bool(members),
            "NodesReady" if members else "NoNodes",
            f"{len(members)}/{len(selected)} nodes ready",
            now,
            gen,
        ),
        backends_condition(selected, now, gen),
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
        cost=_nameplate_cost(pool, len(selected), members),
    )


def backends_condition(nodes: Sequence[NodeState], now: float, generation: int) -> Condition:
    """`BackendsAvailable`: False while an agent cannot open the backend it was given (a pinned
    hailo on a node without the chip), naming each node and why; Unknown before any answered."""
    seen = [n for n in nodes if n.up]
    broken = [n for n in seen if n.backend_error]
    if broken:
        message = "; ".join(f"{n.name}: {n.backend_error}" for n in broken)
        return condition("BackendsAvailable", False, "BackendUnavailable", message, now, generation)
    if not seen:
        return condition("BackendsAvailable", None, "NoAgents", "", now, generation)
    backends = sorted({f"{n.backend or 'gateway'} on {n.accelerator}" for n in seen})
    return condition(
        "BackendsAvailable", True, "BackendsOpen", ", ".join(backends), now, generation
    )


def _nameplate_cost(pool: InferencePool, selected: int, members: Sequence[NodeState]) -> PoolCost:
    """The pool's cost from its spec alone (the runtime replaces it with the live figures)."""
    inputs = pool_cost_inputs(pool)
    fleet = fleet_annual_cost(inputs.device, max(selected, 1), inputs.shared_ops_usd_per_year)
    rate = sum(o.request_rate for n in members for o in n.models)
    measured = (
        cost_per_inference(fleet.total_usd_per_year, inferences_per_year_from_rate(rate))
        if rate > 0
        else None
    )
    cloud = pool.spec.cloud_fallback
    return PoolCost(
        per_device_year_usd=round(float(fleet.per_device_usd_per_year), 2),
        fleet_per_year_usd=round(float(fleet.total_usd_per_year), 2),
        measured_per_inference_usd=float(measured) if measured is not None else None,
        per1k_usd=round(float(measured * 1000), 6) if measured is not None else None,
        cloud_per1k_usd=(
            float(cloud_per_inference_from_per_1k(cloud.price_per1k_usd) * 1000) if cloud else None
        ),
        energy_source="nameplate",
    )


def live_pool_cost(live: LiveCost) -> PoolCost:
    """The InferencePool ``status.cost`` block; rounded so status does not churn each tick."""
    per = live.measured_per_inference_usd
    return PoolCost(
        per_device_year_usd=rounded(live.per_device_year_usd),
        fleet_per_year_usd=rounded(live.fleet_per_year_usd),
        measured_per_inference_usd=significant(per, 4),
        per1k_usd=None if per is None else significant(per * 1000, 4),
        cloud_per1k_usd=(None if live.cloud_per_1k_usd is None else float(live.cloud_per_1k_usd)),
        cloud_break_even_per_device_day=rounded(live.break_even_per_device_day, 1),
        cloud_fallback_spend_usd=rounded(live.cloud_fallback_spend_usd, 4),
        energy_source=live.energy_source,
        **_token_cost(live),
    )


def _token_cost(live: LiveCost) -> dict[str, float | int | None]:
    """The per-token fields of ``status.cost`` (none for a pool without generations)."""
    prices = live.cloud_tokens
    if prices is None and not live.tokens:
        return {}
    return {
        "cloud_per1m_input_usd": None if prices is None else float(prices.input_per_1m_usd),
        "cloud_per1m_output_usd": None if prices is None else float(prices.output_per_1m_usd),
        "edge_tokens": live.edge_tokens,
        "cloud_tokens": live.cloud_token_count,
        "edge_per1m_tokens_usd": significant(live.edge_per_1m_tokens_usd, 4),
        "cloud_token_spend_usd": rounded(live.cloud_token_spend_usd, 6),
    }


def live_model_cost_per1k(live: LiveCost) -> dict[str, float | None]:
    """EdgeModel ``status.costPer1kUsd`` per model name (None until it served something)."""
    return {name: significant(m.per_1k_usd, 4) for name, m in live.models.items()}


@dataclass(frozen=True)
class ModelTokens:
    """A generative model's tokens since the operator started, for its EdgeModel status."""

    edge_tokens: int
    cloud_tokens: int
    cloud_token_spend_usd: float | None
    """None without cloud token prices (no spec.cloudFallback.openai)."""


def live_model_tokens(live: LiveCost) -> dict[str, ModelTokens]:
    """EdgeModel ``status.edgeTokens``, ``cloudTokens`` and ``cloudTokenSpendUsd`` per model
    name (the models that counted tokens): a generative model's share of the cloud in tokens
    and money, beside the pool's totals in ``status.cost``."""
    prices = live.cloud_tokens
    out: dict[str, ModelTokens] = {}
    for name in sorted({m for m, _, _ in live.tokens}):
        cloud_in = sum_tokens(live.tokens, model=name, kind=PROMPT, where=CLOUD)
        cloud_out = sum_tokens(live.tokens, model=name, kind=COMPLETION, where=CLOUD)
        spend = None if prices is None else prices.cost_usd(cloud_in, cloud_out)
        out[name] = ModelTokens(
            edge_tokens=sum_tokens(live.tokens, model=name, where=EDGE),
            cloud_tokens=cloud_in + cloud_out,
            cloud_token_spend_usd=rounded(spend, 6),
        )
    return out
