"""``hatswarm plan``: how many devices of which accelerator carry a load, with K nodes down.

    hatswarm plan -f examples/pool.yaml -f examples/model-defects.yaml \\
        --load defects=300 --tolerate-failures 1

For each accelerator the pool allows, :mod:`capacity` sizes an N+K fleet from the measured
per-model throughput (``--fps MODEL:ACCEL=FPS`` beats ``--measured FILE`` from
``hatswarm loadtest --write-measured``, which beats the EdgeModel artifacts' ``throughputFps``;
a model without its own artifact for a kind runs there on its ``cpu`` artifact, as placement
does) and the models' p99 SLOs. The fleet is then checked with the real placement function
on a synthetic pool of that many identical nodes: every model with load gets enough replicas
that K of them may fail (its NPU share divided over the survivors stays under the utilisation
ceiling), replicas must fit the nodes' memory and NPU contexts, and every set of K nodes is
taken down in turn (all of them while that is at most a few thousand sets, else the K most
loaded). When the check fails the fleet grows one node at a time. The result is costed with
the pool's ``spec.cost`` and set against ``cloudFallback.pricePer1kUsd`` for the same volume.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.manifests import ManifestError, load
from hatswarm_operator.cli.common import parse
from hatswarm_operator.core import placement as pl
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


class PlanError(ValueError):
    """Bad input, reported as a usage error (exit 2)."""


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
) -> tuple[int, dict[str, int], dict[str, tuple[str, ...]], FailureCheck | None, list[str]]:
    """Grow a synthetic fleet from the capacity estimate until placement and the K-failure
    check both pass; returns (devices, replicas per model, layout, check, warnings)."""
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
            pl.Node(f"{accelerator}-{i:03d}", accelerator, node_memory_mib, node_npu_contexts)
            for i in range(1, n + 1)
        ]
        plan_models = [
            pl.Model(
                name=m.metadata.name,
                artifacts=tuple(
                    pl.Artifact(a.accelerator, a.format, a.uri, a.sha256, a.throughput_fps)
                    for a in m.spec.artifacts
                ),
                replicas=min(desired[m.metadata.name], n),
                memory_mib=m.spec.resources.memory_mi_b,
                npu_contexts=m.spec.resources.npu_contexts,
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
            last_reason = "; ".join(u.message for u in short) or (
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
            warnings.append(f"{u.model}: {u.message}")
        replicas = {name: len(nodes_) for name, nodes_ in placed.items()}
        return n, replicas, frozen, check, warnings
    warnings.append(f"no fleet up to {limit} nodes passed: {last_reason}")
    return limit, {}, {}, None, warnings


def plan(
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
) -> list[VerifiedPlan]:
    """One verified plan per accelerator kind (pure)."""
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
                failures=failures, node_memory_mib=node_memory_mib,
                node_npu_contexts=node_npu_contexts,
            )  # fmt: skip
        else:
            devices, replicas, layout, check = capacity.devices, {}, {}, None
            for name in capacity.unserved:
                value, kind_name = fps[name]
                why = (
                    f"no artifact runs on {accel}"
                    if not kind_name
                    else "no measured throughput (throughputFps, --fps or --measured)"
                    if value is None
                    else f"too slow for its p99 SLO at {value} fps"
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


# ------------------------------------------------------------------------------------- CLI


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise PlanError(f"{what}: not a number: {text!r}") from exc
    if not value.is_finite() or value < 0:
        raise PlanError(f"{what}: must be a finite number >= 0, got {text}")
    return value


def parse_load(items: Sequence[str]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for item in items:
        name, sep, rate = item.partition("=")
        if not sep or not name:
            raise PlanError(f"--load {item!r}: expected MODEL=RATE (requests per second)")
        out[name] = out.get(name, Decimal(0)) + _decimal(rate, f"--load {name}")
    return out


def parse_fps(items: Sequence[str]) -> dict[str, dict[str, Decimal]]:
    out: dict[str, dict[str, Decimal]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        model, colon, accel = key.partition(":")
        if not sep or not colon or not model or not accel:
            raise PlanError(f"--fps {item!r}: expected MODEL:ACCELERATOR=FPS")
        fps = _decimal(value, f"--fps {key}")
        if fps <= 0:
            raise PlanError(f"--fps {key}: must be > 0")
        out.setdefault(model, {})[accel] = fps
    return out


def read_measured(path: Path) -> dict[str, dict[str, Decimal]]:
    """``{model: {accelerator: fps}}`` as ``hatswarm loadtest --write-measured`` writes it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"--measured {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise PlanError(f"--measured {path}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise PlanError(f"--measured {path}: expected {{model: {{accelerator: fps}}}}")
    out: dict[str, dict[str, Decimal]] = {}
    for model, per in raw.items():
        if not isinstance(per, dict):
            raise PlanError(f"--measured {path}: {model}: expected {{accelerator: fps}}")
        for accel, fps in per.items():
            if isinstance(fps, bool) or not isinstance(fps, int | float) or fps <= 0:
                raise PlanError(f"--measured {path}: {model}.{accel}: not a positive number")
            out.setdefault(str(model), {})[str(accel)] = Decimal(str(fps))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hatswarm plan",
        description="Devices of which accelerator meet a load and its SLOs with K nodes down, "
        "and what that fleet costs against the cloud.",
    )
    p.add_argument("-f", "--file", action="append", required=True, metavar="PATH",
                   help="InferencePool and EdgeModel manifests (files or folders)")  # fmt: skip
    p.add_argument("--load", action="append", required=True, metavar="MODEL=RATE",
                   help="requests per second for a model (repeatable)")  # fmt: skip
    p.add_argument("--tolerate-failures", type=int, default=1, metavar="K",
                   help="nodes that may be down at once (default 1)")  # fmt: skip
    p.add_argument("--fps", action="append", default=[], metavar="MODEL:ACCEL=FPS",
                   help="measured throughput, beats --measured and throughputFps")  # fmt: skip
    p.add_argument("--measured", type=Path, metavar="FILE",
                   help="{model: {accelerator: fps}} from hatswarm loadtest --write-measured")  # fmt: skip
    p.add_argument("--pool", help="the InferencePool to plan (when the files hold several)")
    p.add_argument("--accelerator", action="append", default=[], metavar="ACCEL",
                   help="plan only these kinds (default: the pool's accelerators)")  # fmt: skip
    p.add_argument("--max-utilisation", default=str(DEFAULT_MAX_UTILISATION), metavar="U",
                   help="NPU busy ceiling per node after failures (default 0.7)")  # fmt: skip
    p.add_argument("--node-memory-mib", type=int, default=3072,
                   help="memory per node the pool may use (default 3072)")  # fmt: skip
    p.add_argument("--node-npu-contexts", type=int, default=4,
                   help="NPU contexts per node (default 4)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _select(args: argparse.Namespace) -> tuple[InferencePool, list[EdgeModel]]:
    try:
        manifests = load(args.file)
    except ManifestError as exc:
        raise PlanError(str(exc)) from exc
    pools = manifests.pools
    if args.pool:
        pools = [p for p in pools if p.metadata.name == args.pool]
    if not pools:
        raise PlanError(
            f"no InferencePool {args.pool!r} in the files"
            if args.pool
            else "no InferencePool in the files (pass the pool manifest with -f)"
        )
    if len(pools) > 1:
        names = ", ".join(p.metadata.name for p in pools)
        raise PlanError(f"several pools ({names}): choose one with --pool")
    pool = pools[0]
    models = [m for m in manifests.models if m.spec.pool == pool.metadata.name]
    return pool, sorted(models, key=lambda m: m.metadata.name)


def run(args: argparse.Namespace) -> tuple[InferencePool, list[VerifiedPlan], dict[str, Decimal]]:
    pool, models = _select(args)
    rates = parse_load(args.load)
    known = {m.metadata.name for m in models}
    unknown = sorted(set(rates) - known)
    if unknown:
        raise PlanError(
            f"--load names models with no EdgeModel in pool {pool.metadata.name}: "
            f"{', '.join(unknown)} (known: {', '.join(sorted(known)) or 'none'})"
        )
    if args.tolerate_failures < 0:
        raise PlanError("--tolerate-failures must be >= 0")
    if args.node_memory_mib < 1 or args.node_npu_contexts < 0:
        raise PlanError("--node-memory-mib must be >= 1 and --node-npu-contexts >= 0")
    ceiling = _decimal(args.max_utilisation, "--max-utilisation")
    if not 0 < ceiling <= 1:
        raise PlanError("--max-utilisation must be within (0, 1]")
    allowed = set(pool.spec.accelerators)
    for accel in args.accelerator:
        if accel not in allowed:
            raise PlanError(f"--accelerator {accel}: pool allows {', '.join(sorted(allowed))}")
    plans = plan(
        pool,
        models,
        rates,
        failures=args.tolerate_failures,
        overrides=parse_fps(args.fps),
        measured=read_measured(args.measured) if args.measured else {},
        accelerators=args.accelerator or None,
        max_utilisation=ceiling,
        node_memory_mib=args.node_memory_mib,
        node_npu_contexts=args.node_npu_contexts,
    )
    return pool, plans, rates


def _f(value: Decimal | None, places: int = 2) -> float | None:
    return None if value is None else float(round(value, places))


def _sig(value: Decimal | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def to_json(
    pool: InferencePool, plans: Sequence[VerifiedPlan], rates: Mapping[str, Decimal], k: int
) -> dict[str, Any]:
    best = cheapest(plans)
    return {
        "pool": pool.metadata.name,
        "tolerate_failures": k,
        "load_rps": {m: float(r) for m, r in sorted(rates.items())},
        "recommended": None if best is None else best.accelerator,
        "plans": [
            {
                "accelerator": p.accelerator,
                "feasible": p.feasible,
                "devices": p.devices,
                "capacity_devices": p.capacity.devices,
                "serving_devices": p.capacity.serving_devices,
                "busy_devices": _f(p.capacity.busy_devices, 4),
                "max_utilisation": _f(p.capacity.max_utilisation, 4),
                "worst_utilisation_after_failures": (
                    None if p.check is None else _f(p.check.worst_utilisation, 4)
                ),
                "worst_failure": None if p.check is None else list(p.check.down),
                "failure_sets_checked": None if p.check is None else p.check.sets_checked,
                "failure_check_exhaustive": None if p.check is None else p.check.exhaustive,
                "fps": {m: float(v) for m, v in sorted(p.fps.items())},
                "replicas": dict(sorted(p.replicas.items())),
                "layout": {n: list(ms) for n, ms in sorted(p.layout.items())},
                "edge_usd_per_year": _f(p.edge_usd_per_year),
                "per_device_usd_per_year": _f(p.fleet.per_device_usd_per_year),
                "edge_per_1k_usd": _sig(
                    None if p.edge_per_inference_usd is None else p.edge_per_inference_usd * 1000
                ),
                "cloud_usd_per_year": _f(p.cloud_usd_per_year),
                "cloud_per_1k_usd": _sig(
                    None if p.cloud_per_inference_usd is None else p.cloud_per_inference_usd * 1000
                ),
                "savings_vs_cloud_usd_per_year": (
                    None
                    if p.cloud_usd_per_year is None
                    else _f(p.cloud_usd_per_year - p.edge_usd_per_year)
                ),
                "break_even_per_device_day": _f(p.break_even_per_device_day, 1),
                "inferences_per_year": float(p.capacity.inferences_per_year),
                "warnings": list(p.warnings),
            }
            for p in plans
        ],
    }


def _usd(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def to_table(
    pool: InferencePool, plans: Sequence[VerifiedPlan], rates: Mapping[str, Decimal], k: int
) -> str:
    load = ", ".join(f"{m} {r} req/s" for m, r in sorted(rates.items()))
    lines = [f"hatswarm plan: pool {pool.metadata.name}, {load}, tolerate {k} node(s) down", ""]
    header = (
        f"{'accelerator':<12}{'devices':>8}{'N+K':>6}{'util@K':>8}{'edge/yr':>14}"
        f"{'cloud/yr':>17}{'edge/1k':>10}{'cloud/1k':>10}  verdict"
    )
    lines.append(header)
    for p in plans:
        per_1k = p.edge_per_inference_usd
        cloud_1k = p.cloud_per_inference_usd
        util = "-" if p.check is None else f"{p.check.worst_utilisation:.0%}"
        verdict = "ok" if p.feasible else "cannot serve"
        lines.append(
            f"{p.accelerator:<12}{p.devices:>8}{p.capacity.devices:>6}{util:>8}"
            f"{_usd(p.edge_usd_per_year):>14}{_usd(p.cloud_usd_per_year):>17}"
            f"{'-' if per_1k is None else f'${per_1k * 1000:.4f}':>10}"
            f"{'-' if cloud_1k is None else f'${cloud_1k * 1000:.4f}':>10}  {verdict}"
        )
    lines.append("(devices: what placement proved with K nodes down; N+K: the capacity estimate)")
    lines.append("")
    for p in plans:
        if p.replicas:
            reps = ", ".join(f"{m} x{n}" for m, n in sorted(p.replicas.items()))
            lines.append(f"{p.accelerator}: replicas {reps}")
        if p.check is not None:
            scope = "every" if p.check.exhaustive else "the most loaded"
            lines.append(
                f"{p.accelerator}: {p.check.sets_checked} failure set(s) checked ({scope}); "
                f"worst: {', '.join(p.check.down) or 'none'} down -> "
                f"{p.check.worst_utilisation:.0%} busy"
            )
        lines += [f"{p.accelerator}: warning: {w}" for w in p.warnings]
    best = cheapest(plans)
    lines.append("")
    if best is None:
        lines.append("no accelerator kind can carry this load within its SLOs")
    else:
        savings = best.cloud_usd_per_year
        tail = (
            ""
            if savings is None
            else f"; the cloud would cost {_usd(savings)} a year "
            f"({'edge' if best.edge_usd_per_year < savings else 'cloud'} is cheaper)"
        )
        lines.append(
            f"recommended: {best.devices} x {best.accelerator} "
            f"({_usd(best.edge_usd_per_year)} a year{tail})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        pool, plans, rates = run(args)
    except PlanError as exc:
        print(f"hatswarm plan: error: {exc}", file=sys.stderr)
        return 2
    k = args.tolerate_failures
    if args.json:
        print(json.dumps(to_json(pool, plans, rates, k), indent=2))
    else:
        print(to_table(pool, plans, rates, k))
    return 0 if cheapest(plans) is not None else 1


if __name__ == "__main__":
    sys.exit(main())
