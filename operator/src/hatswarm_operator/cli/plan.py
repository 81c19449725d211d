"""``hatswarm plan``: how many devices of which accelerator carry a load, with K nodes down.

    hatswarm plan -f examples/pool.yaml -f examples/model-defects.yaml \\
        --load defects=300 --tolerate-failures 1

The planning is :mod:`hatswarm_operator.core.fleetplan` (N+K capacity per accelerator, proved
by placement with every K nodes down, costed against the cloud); this module reads the
manifests and flags (``--fps MODEL:ACCEL=FPS`` beats ``--measured FILE`` from
``hatswarm loadtest --write-measured``, which beats the artifacts' ``throughputFps``) and
prints a table or JSON. Node memory is capped as the operator caps it on a cluster: no node
offers more than the agent container's memory limit (spec.agent.resources.limits.memory) less
spec.placement.agentMemoryBaselineMiB (core.fleetplan.plan_fleet; `hatswarm up` runs agents as
processes, with no such limit).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.manifests import ManifestError, load
from hatswarm_operator.cli.common import (
    CommandError,
    Parser,
    UsageError,
    add_output,
    emit,
    run,
    usage_errors,
)
from hatswarm_operator.core.fleetplan import VerifiedPlan, cheapest, plan_fleet
from hatswarm_operator.core.inventory import memory_budget
from hatswarm_operator.finops.capacity import DEFAULT_MAX_UTILISATION
from hatswarm_operator.finops.money import parse_amount, rounded, significant, usd
from hatswarm_operator.local.processes import load_nodes_file


def _decimal(text: str, what: str) -> Decimal:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from exc


def parse_load(items: Sequence[str]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for item in items:
        name, sep, rate = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--load {item!r}: expected MODEL=RATE (requests per second)")
        out[name] = out.get(name, Decimal(0)) + _decimal(rate, f"--load {name}")
    return out


def parse_fps(items: Sequence[str]) -> dict[str, dict[str, Decimal]]:
    out: dict[str, dict[str, Decimal]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        model, colon, accel = key.partition(":")
        if not sep or not colon or not model or not accel:
            raise UsageError(f"--fps {item!r}: expected MODEL:ACCELERATOR=FPS")
        fps = _decimal(value, f"--fps {key}")
        if fps <= 0:
            raise UsageError(f"--fps {key}: must be > 0")
        out.setdefault(model, {})[accel] = fps
    return out


def read_measured(path: Path) -> dict[str, dict[str, Decimal]]:
    """``{model: {accelerator: fps}}`` as ``hatswarm loadtest --write-measured`` writes it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--measured {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"--measured {path}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"--measured {path}: expected {{model: {{accelerator: fps}}}}")
    out: dict[str, dict[str, Decimal]] = {}
    for model, per in raw.items():
        if not isinstance(per, dict):
            raise UsageError(f"--measured {path}: {model}: expected {{accelerator: fps}}")
        for accel, fps in per.items():
            if isinstance(fps, bool) or not isinstance(fps, int | float) or fps <= 0:
                raise UsageError(f"--measured {path}: {model}.{accel}: not a positive number")
            out.setdefault(str(model), {})[str(accel)] = Decimal(str(fps))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
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
                   help="memory per node the pool may use (default 3072), at most what the "
                   "agent container may hold (its memory limit less agentMemoryBaselineMiB)")  # fmt: skip
    p.add_argument("--nodes-file", type=Path, metavar="FILE",
                   help="the nodes one has, as for hatswarm up ({name, accelerator, memoryMiB}): "
                   "the fleet uses them first, each with its memoryMiB less the pool's "
                   "nodeMemoryReserveMiB, capped like --node-memory-mib; more devices get "
                   "--node-memory-mib")  # fmt: skip
    p.add_argument("--node-npu-contexts", type=int, default=4,
                   help="NPU contexts per node (default 4)")  # fmt: skip
    add_output(p)
    return p


def _select(args: argparse.Namespace) -> tuple[InferencePool, list[EdgeModel]]:
    with usage_errors(ManifestError):
        manifests = load(args.file)
    pools = manifests.pools
    if args.pool:
        pools = [p for p in pools if p.metadata.name == args.pool]
    if not pools:
        raise UsageError(
            f"no InferencePool {args.pool!r} in the files"
            if args.pool
            else "no InferencePool in the files (pass the pool manifest with -f)"
        )
    if len(pools) > 1:
        names = ", ".join(p.metadata.name for p in pools)
        raise UsageError(f"several pools ({names}): choose one with --pool")
    pool = pools[0]
    models = [m for m in manifests.models if m.spec.pool == pool.metadata.name]
    return pool, sorted(models, key=lambda m: m.metadata.name)


def plan_from_args(
    args: argparse.Namespace,
) -> tuple[InferencePool, list[VerifiedPlan], dict[str, Decimal]]:
    """Read the files and flags and plan (UsageError for bad input)."""
    pool, models = _select(args)
    rates = parse_load(args.load)
    known = {m.metadata.name for m in models}
    unknown = sorted(set(rates) - known)
    if unknown:
        raise UsageError(
            f"--load names models with no EdgeModel in pool {pool.metadata.name}: "
            f"{', '.join(unknown)} (known: {', '.join(sorted(known)) or 'none'})"
        )
    if args.tolerate_failures < 0:
        raise UsageError("--tolerate-failures must be >= 0")
    if args.node_memory_mib < 1 or args.node_npu_contexts < 0:
        raise UsageError("--node-memory-mib must be >= 1 and --node-npu-contexts >= 0")
    ceiling = _decimal(args.max_utilisation, "--max-utilisation")
    if not 0 < ceiling <= 1:
        raise UsageError("--max-utilisation must be within (0, 1]")
    allowed = set(pool.spec.accelerators)
    for accel in args.accelerator:
        if accel not in allowed:
            raise UsageError(f"--accelerator {accel}: pool allows {', '.join(sorted(allowed))}")
    plans = plan_fleet(
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
        known_nodes=_known_nodes(args.nodes_file, pool, args.node_memory_mib),
    )
    return pool, plans, rates


def _known_nodes(
    path: Path | None, pool: InferencePool, default_mib: int
) -> dict[str, list[tuple[str, int]]]:
    """`--nodes-file`, read as `hatswarm up` reads it: (name, budget) by accelerator; a node
    without memoryMiB offers --node-memory-mib, like the devices the plan adds."""
    if path is None:
        return {}
    with usage_errors(OSError, ValueError, yaml.YAMLError):
        try:
            specs = load_nodes_file(path, {})
        except OSError as exc:
            raise OSError(f"--nodes-file {path}: {exc.strerror or exc}") from exc
    reserve = pool.spec.placement.node_memory_reserve_mi_b
    out: dict[str, list[tuple[str, int]]] = {}
    for n in specs:
        mib = default_mib if n.memory_mib is None else memory_budget(n.memory_mib, reserve)
        out.setdefault(n.accelerator, []).append((n.name, mib))
    return out


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
                "busy_devices": rounded(p.capacity.busy_devices, 4),
                "max_utilisation": rounded(p.capacity.max_utilisation, 4),
                "worst_utilisation_after_failures": (
                    None if p.check is None else rounded(p.check.worst_utilisation, 4)
                ),
                "worst_failure": None if p.check is None else list(p.check.down),
                "failure_sets_checked": None if p.check is None else p.check.sets_checked,
                "failure_check_exhaustive": None if p.check is None else p.check.exhaustive,
                "fps": {m: float(v) for m, v in sorted(p.fps.items())},
                "replicas": dict(sorted(p.replicas.items())),
                "layout": {n: list(ms) for n, ms in sorted(p.layout.items())},
                "edge_usd_per_year": rounded(p.edge_usd_per_year),
                "per_device_usd_per_year": rounded(p.fleet.per_device_usd_per_year),
                "edge_per_1k_usd": significant(
                    None if p.edge_per_inference_usd is None else p.edge_per_inference_usd * 1000
                ),
                "cloud_usd_per_year": rounded(p.cloud_usd_per_year),
                "cloud_per_1k_usd": significant(
                    None if p.cloud_per_inference_usd is None else p.cloud_per_inference_usd * 1000
                ),
                "savings_vs_cloud_usd_per_year": (
                    None
                    if p.cloud_usd_per_year is None
                    else rounded(p.cloud_usd_per_year - p.edge_usd_per_year)
                ),
                "break_even_per_device_day": rounded(p.break_even_per_device_day, 1),
                "inferences_per_year": float(p.capacity.inferences_per_year),
                "warnings": list(p.warnings),
            }
            for p in plans
        ],
    }


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
            f"{usd(p.edge_usd_per_year):>14}{usd(p.cloud_usd_per_year):>17}"
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
            else f"; the cloud would cost {usd(savings)} a year "
            f"({'edge' if best.edge_usd_per_year < savings else 'cloud'} is cheaper)"
        )
        lines.append(
            f"recommended: {best.devices} x {best.accelerator} "
            f"({usd(best.edge_usd_per_year)} a year{tail})"
        )
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> int:
    pool, plans, rates = plan_from_args(args)
    k = args.tolerate_failures
    emit(args.output, to_json(pool, plans, rates, k), lambda: to_table(pool, plans, rates, k))
    if cheapest(plans) is None:
        raise CommandError(f"no accelerator carries this load with {k} node(s) down")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, _command)


if __name__ == "__main__":
    sys.exit(main())
