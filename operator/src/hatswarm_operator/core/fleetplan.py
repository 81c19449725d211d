"""How many devices of which accelerator carry a load with K nodes down, proved by placement.

For each accelerator kind, :mod:`hatswarm_operator.finops.capacity` sizes an N+K fleet from
the measured per-model throughput (:func:`fps_for`: an override, then a measured table, then
the EdgeModel artifacts' ``throughputFps``; a model without its own artifact for a kind runs
there on its ``cpu`` artifact, as placement does) and the models' p99 SLOs. The fleet is then
checked with the real placement function on a synthetic pool of that many identical nodes:
every model with load gets enough replicas that K of them may fail (its NPU share divided over
the survivors stays under the utilisation ceiling), replicas must fit the nodes' memory and
NPU contexts, and every set of K nodes is taken down in turn (all of them while that is at
most a few thousand sets, else the K most loaded). When the check fails the fleet grows one
node at a time. The result is costed with the pool's ``spec.cost`` and set against
``cloudFallback.pricePer1kUsd`` for the same volume. Pure: `hatswarm plan` reads the files
and prints.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.core import placement as pl
from hatswarm_operator.core.inventory import container_cap, memory_budget
from hatswarm_operator.finops.attribution import pool_cost_inputs
from hatswarm_operator.finops.capacity import (
    DEFAULT_MAX_UTILISATION,
    AcceleratorKind,
    KindPlan,
    ModelLoad,
    plan_kind,
)
from hatswarm_operator.finops.tco import (
    FleetCost,
    break_even_per_device_day,
    cloud_per_inference_from_per_1k,
    fleet_annual_cost,
)

MAX_FAILURE_SETS = 2000
"""Beyond this many K-node subsets only the K most loaded nodes are taken down."""

FpsTable = Mapping[str, Mapping[str, Decimal]]  # model -> accelerator -> fps


# ------------------------------------------------------------------------------- throughput


def fps_for(
    model: EdgeModel,
    accelerator: str,
    overrides: FpsTable,
    measured: FpsTable,
) -> tuple[Decimal | None, str]:
    """(inferences/s of ``model`` on a node of ``accelerator``, the artifact kind it runs on).

    Precedence per artifact kind: ``--fps``, then ``--measured``, then the artifact's
    ``throughputFps``. The node's own accelerator artifact wins over the cpu one, always
    (placement never flips a replica to the CPU); ("", None) when it cannot run there.
    """
    name = model.metadata.name
    for kind in (accelerator, pl.CPU):
        artifact = model.spec.artifact_for(kind)
        if artifact is None:
            continue
        for table in (overrides, measured):
            value = table.get(name, {}).get(kind)
            if value is not None:
                return value, kind
        if artifact.throughput_fps:
            return Decimal(str(artifact.throughput_fps)), kind
        return None, kind
    return None, ""


# ------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class FailureCheck:
    """The worst K-node failure found for a fleet, or why the fleet does not hold."""

    ok: bool
    worst_utilisation: Decimal
    down: tuple[str, ...]
    sets_checked: int
    exhaustive: bool
    reason: str = ""


@dataclass(frozen=True)
class VerifiedPlan:
    """One accelerator kind: the capacity estimate and the fleet placement proved."""

    accelerator: str
    capacity: KindPlan
    devices: int
    replicas: Mapping[str, int]
    layout: Mapping[str, tuple[str, ...]]
    """node -> models on it, in the verified placement."""
    check: FailureCheck | None
    fleet: FleetCost
    cloud_per_inference_usd: Decimal | None
    warnings: tuple[str, ...] = ()
    fps: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.capacity.feasible and self.check is not None and self.check.ok

    @property
    def edge_usd_per_year(self) -> Decimal:
        return self.fleet.total_usd_per_year

    @property
    def cloud_usd_per_year(self) -> Decimal | None:
        if self.cloud_per_inference_usd is None:
            return None
        return self.capacity.inferences_per_year * self.cloud_per_inference_usd

    @property
    def edge_per_inference_usd(self) -> Decimal | None:
        volume = self.capacity.inferences_per_year
        return self.edge_usd_per_year / volume if volume > 0 else None

    @property
    def break_even_per_device_day(self) -> Decimal | None:
        if self.cloud_per_inference_usd is None or self.devices == 0:
            return None
        return break_even_per_device_day(
            self.fleet.per_device_usd_per_year, self.cloud_per_inference_usd
        )


def _needed_replicas(rate: Decimal, fps: Decimal, ceiling: Decimal) -> int:
    """Replicas whose even share of the load keeps each under the ceiling."""
    if rate <= 0:
        return 0
    return max(1, int((rate / fps / ceiling).to_integral_value(rounding=ROUND_CEILING)))


def _node_busy(
    layout: Mapping[str, Sequence[str]],
    alive: set[str],
    busy: Mapping[str, Decimal],
) -> tuple[dict[str, Decimal], list[str]]:
    """Per surviving node, its NPU busy share when each model's load splits evenly over its
    surviving replicas (identical nodes); and the loaded models left with no replica."""
    survivors: dict[str, int] = {}
    for node, models in layout.items():
        if node in alive:
            for m in models:
                survivors[m] = survivors.get(m, 0) + 1
    lost = sorted(m for m, b in busy.items() if b > 0 and survivors.get(m, 0) == 0)
    out: dict[str, Decimal] = {}
    for node, models in layout.items():
        if node in alive:
            out[node] = sum((busy.get(m, Decimal(0)) / survivors[m] for m in models), Decimal(0))
    return out, lost


def check_failures(
    nodes: Sequence[str],
    layout: Mapping[str, Sequence[str]],
    busy: Mapping[str, Decimal],
    failures: int,
    ceiling: Decimal,
) -> FailureCheck:
    """Take every set of ``failures`` nodes down (or the most loaded ones when there are too
    many sets) and check the survivors stay under ``ceiling`` with every loaded model served."""
    k = min(failures, len(nodes))
    everyone = set(nodes)
    exhaustive = math.comb(len(nodes), k) <= MAX_FAILURE_SETS
    if exhaustive:
        sets: list[tuple[str, ...]] = list(itertools.combinations(sorted(nodes), k))
    else:
        loads, _ = _node_busy(layout, everyone, busy)
        worst = sorted(nodes, key=lambda n: (-loads.get(n, Decimal(0)), n))[:k]
        sets = [tuple(sorted(worst))]
    worst_util = Decimal(0)
    worst_set: tuple[str, ...] = ()
    for down in sets:
        loads, lost = _node_busy(layout, everyone - set(down), busy)
        if lost:
            return FailureCheck(
                False, worst_util, down, len(sets), exhaustive,
                f"with {', '.join(down)} down nothing serves {', '.join(lost)}",
            )  # fmt: skip
        peak = max(loads.values(), default=Decimal(0))
        if peak > worst_util or not worst_set:
            worst_util, worst_set = peak, down
        if peak > ceiling:
            return FailureCheck(
                False, peak, down, len(sets), exhaustive,
                f"with {', '.join(down) or 'no node'} down a node runs at {peak:.0%} "
                f"(ceiling {ceiling:.0%})",
            )  # fmt: skip
    return FailureCheck(True, worst_util, worst_set, len(sets), exhaustive)


def verify_kind(
    accelerator: str,
    models: Sequence[EdgeModel],
    rates: Mapping[str, Decimal],
    capacity: KindPlan,
    fps: Mapping[str, tuple[Decimal | None, str]],
    *,
    failures: int,
    node_memory_mib: int,
    node_npu_contexts: int,
    max_devices: int | None = None,
    known: Sequence[tuple[str, int]] = (),
    caps: Sequence[str] = (),
) -> tuple[int, dict[str, int], dict[str, tuple[str, ...]], FailureCheck | None, list[str]]:
    """Grow a synthetic fleet from the capacity estimate until placement and the K-failure
    check both pass; returns (devices, replicas per model, layout, check, warnings).

    `known` are nodes of this kind one has, (name, memory budget): the fleet is made of them
    first, roomiest first, and only the devices beyond them get `node_memory_mib` (a mixed
    floor of 2 and 8 GB Pis is not planned as if every node had the same memory). `caps` name
    the agent container's limit when it set those budgets (for the messages, as the operator's)."""
    have = sorted(known, key=lambda k: (-k[1], k[0]))
    ceiling = capacity.max_utilisation
    busy: dict[str, Decimal] = {}
    desired: dict[str, int] = {}
    warnings: list[str] = []
    for m in models:
        name = m.metadata.name
        rate = rates.get(name, Decimal(0))
        value, kind = fps[name]
        if not kind:
            if rate > 0:
                warnings.append(f"{name}: no artifact runs on {accelerator}")
            else:
                warnings.append(f"{name}: not placed (no artifact for {accelerator}, no load)")
            continue
        target = m.spec.replicas.target()
        if rate > 0 and value is not None:
            busy[name] = rate / value
            desired[name] = max(target, _needed_replicas(rate, value, ceiling) + failures)
        elif rate <= 0:
            desired[name] = target
    placeable = [m for m in models if m.metadata.name in desired]
    start = max(capacity.devices, max(desired.values(), default=0), 1)
    limit = max_devices if max_devices is not None else start * 4 + 16
    last_reason = ""
    for n in range(start, limit + 1):
        nodes = [
            pl.Node(have[i - 1][0], accelerator, have[i - 1][1], node_npu_contexts)
            if i <= len(have)
            else pl.Node(f"{accelerator}-{i:03d}", accelerator, node_memory_mib, node_npu_contexts)
            for i in range(1, n + 1)
        ]
        plan_models = [
            pl.Model(
                name=m.metadata.name,
                artifacts=tuple(
                    pl.Artifact(
                        a.accelerator, a.format, a.uri, a.sha256, a.throughput_fps, a.memory_mi_b
                    )
                    for a in m.spec.artifacts
                ),
                replicas=min(desired[m.metadata.name], n),
                memory_mib=m.spec.resources.memory_mi_b,
                npu_contexts=m.spec.resources.npu_contexts,
                task=m.spec.task,
            )
            for m in placeable
        ]
        placement = pl.place(nodes, plan_models)
        short = [u for u in placement.unplaced if busy.get(u.model, Decimal(0)) > 0]
        placed = placement.assignment()
        too_few = [
            name
            for name, want in desired.items()
            if busy.get(name) and len(placed.get(name, ())) < want
        ]
        if short or too_few:
            last_reason = "; ".join(u.with_caps(caps) for u in short) or (
                f"{', '.join(too_few)} need more nodes than {n} for their replicas"
            )
            continue
        layout: dict[str, list[str]] = {node.name: [] for node in nodes}
        for r in placement.replicas:
            layout[r.node].append(r.model)
        frozen = {k: tuple(v) for k, v in layout.items()}
        check = check_failures([x.name for x in nodes], frozen, busy, failures, ceiling)
        if not check.ok:
            last_reason = check.reason
            continue
        for u in placement.unplaced:
            warnings.append(f"{u.model}: {u.with_caps(caps)}")
        replicas = {name: len(nodes_) for name, nodes_ in placed.items()}
        return n, replicas, frozen, check, warnings
    warnings.append(f"no fleet up to {limit} nodes passed: {last_reason}")
    return limit, {}, {}, None, warnings


def plan_fleet(
    pool: InferencePool,
    models: Sequence[EdgeModel],
    rates: Mapping[str, Decimal],
    *,
    failures: int = 1,
    overrides: FpsTable | None = None,
    measured: FpsTable | None = None,
    accelerators: Sequence[str] | None = None,
    max_utilisation: Decimal = DEFAULT_MAX_UTILISATION,
    node_memory_mib: int = 3072,
    node_npu_contexts: int = 4,
    known_nodes: Mapping[str, Sequence[tuple[str, int]]] | None = None,
) -> list[VerifiedPlan]:
    """One verified plan per accelerator kind the pool allows (or ``accelerators``);
    ``known_nodes`` by accelerator: the (name, memory budget) of nodes one has already.

    Every budget (``node_memory_mib`` and the known nodes') is capped as the operator caps a
    node's on a cluster: at most the agent container's memory limit less the agent's own
    baseline (inventory.container_cap, inventory.memory_budget), since every model a node
    holds runs in that container."""
    cap = container_cap(pool)

    def capped(budget_mib: int) -> int:
        return memory_budget(budget_mib, 0, cap)  # a budget already: no reserve to take off

    known = {a: [(n, capped(mib)) for n, mib in ns] for a, ns in (known_nodes or {}).items()}
    lowered = capped(node_memory_mib) < node_memory_mib or any(
        capped(mib) < mib for ns in (known_nodes or {}).values() for _, mib in ns
    )
    caps = (str(cap),) if cap is not None and lowered else ()
    inputs = pool_cost_inputs(pool)
    cloud = (
        None
        if inputs.cloud_usd_per_1k is None
        else cloud_per_inference_from_per_1k(inputs.cloud_usd_per_1k)
    )
    out: list[VerifiedPlan] = []
    for accel in accelerators or pool.spec.accelerators:
        fps = {m.metadata.name: fps_for(m, accel, overrides or {}, measured or {}) for m in models}
        kind = AcceleratorKind(
            accel, {n: v for n, (v, _) in fps.items() if v is not None}, inputs.device
        )
        loads = [
            ModelLoad(
                m.metadata.name,
                rates.get(m.metadata.name, Decimal(0)),
                Decimal(str(m.spec.slo.p99_latency_ms)) / 1000,
            )
            for m in models
        ]
        capacity = plan_kind(
            loads,
            kind,
            max_utilisation=max_utilisation,
            failures=failures,
            shared_ops_usd_per_year=inputs.shared_ops_usd_per_year,
            cloud_per_inference_usd=cloud,
        )
        warnings: list[str] = []
        if capacity.feasible:
            devices, replicas, layout, check, warnings = verify_kind(
                accel, models, rates, capacity, fps,
                failures=failures, node_memory_mib=capped(node_memory_mib),
                node_npu_contexts=node_npu_contexts, known=known.get(accel, ()), caps=caps,
            )  # fmt: skip
        else:
            devices, replicas, layout, check = capacity.devices, {}, {}, None
            for name in capacity.unserved:
                value, kind_name = fps[name]
                # A node without the model's own build for it runs the cpu artifact: say so,
                # or an --fps given for the chip seems ignored.
                artifact = "" if kind_name == accel else f" of its {kind_name} artifact"
                fallback = "" if kind_name == accel else f" (it has none for {accel})"
                why = (
                    f"no artifact runs on {accel}"
                    if not kind_name
                    else f"no measured throughput{artifact} (throughputFps, --fps or --measured)"
                    f"{fallback}"
                    if value is None
                    else f"too slow for its p99 SLO at {value} fps{artifact}{fallback}"
                )
                warnings.append(f"{name}: {why}")
        out.append(
            VerifiedPlan(
                accelerator=accel,
                capacity=capacity,
                devices=devices,
                replicas=replicas,
                layout=layout,
                check=check,
                fleet=fleet_annual_cost(inputs.device, devices, inputs.shared_ops_usd_per_year),
                cloud_per_inference_usd=cloud,
                warnings=tuple(warnings),
                fps={n: v for n, (v, _) in fps.items() if v is not None},
            )
        )
    return out


def cheapest(plans: Sequence[VerifiedPlan]) -> VerifiedPlan | None:
    return min(
        (p for p in plans if p.feasible),
        key=lambda p: (p.edge_usd_per_year, p.accelerator),
        default=None,
    )
