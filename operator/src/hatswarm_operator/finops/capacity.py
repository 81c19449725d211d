"""SLO-driven capacity planning, pure: how many nodes of each accelerator kind a load needs.

The seed's playbook asks to provision from SLOs and to simulate failures before deploying.
Here a load (requests per second per model) is turned into NPU-busy time using the measured
per-model throughput of each accelerator kind (never TOPS: a Hailo-8 is 4.5x a Hailo-8L on
yolov8s but not on every model). Nodes are kept at or below a utilisation ceiling so queues
stay short enough for the p99 SLO, and K extra nodes are added so that the ceiling still
holds after K failures (N+K). Each candidate fleet is then costed with :mod:`tco` and set
against the cloud price. Placement of replicas onto named nodes is another module's job;
this one only answers "how many, of which kind, for how much".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from hatswarm_operator.finops.money import Number, to_decimal
from hatswarm_operator.finops.tco import (
    SECONDS_PER_YEAR,
    DeviceCostInputs,
    FleetCost,
    fleet_annual_cost,
)

DEFAULT_MAX_UTILISATION = Decimal("0.7")


@dataclass(frozen=True)
class ModelLoad:
    """Demand for one model: steady request rate and, optionally, its p99 latency SLO."""

    model: str
    requests_per_second: Decimal
    p99_slo_seconds: Decimal | None = None

    def __post_init__(self) -> None:
        rps = to_decimal(self.requests_per_second)
        if rps < 0:
            raise ValueError(f"{self.model}: requests_per_second must be >= 0, got {rps}")
        object.__setattr__(self, "requests_per_second", rps)
        if self.p99_slo_seconds is not None:
            slo = to_decimal(self.p99_slo_seconds)
            if slo <= 0:
                raise ValueError(f"{self.model}: p99_slo_seconds must be > 0, got {slo}")
            object.__setattr__(self, "p99_slo_seconds", slo)


@dataclass(frozen=True)
class AcceleratorKind:
    """A node type (e.g. Pi 5 + Hailo-8L) with its measured per-model throughput and cost."""

    name: str
    fps: Mapping[str, Decimal]
    cost: DeviceCostInputs = field(default_factory=DeviceCostInputs)

    def __post_init__(self) -> None:
        fps = {model: to_decimal(value) for model, value in self.fps.items()}
        for model, value in fps.items():
            if value <= 0:
                raise ValueError(f"{self.name}: fps for {model} must be > 0, got {value}")
        object.__setattr__(self, "fps", fps)


def mm1_max_utilisation(
    service_seconds: Number, p99_slo_seconds: Number, quantile: Number = "0.99"
) -> Decimal:
    """Highest utilisation at which an M/M/1 queue keeps the q-quantile latency within SLO.

    In M/M/1 the time in system is exponential with rate mu - lambda, so its q-quantile is
    ln(1/(1-q)) / (mu (1 - rho)); solving for rho gives 1 - ln(1/(1-q)) x service / SLO.
    Exponential service is pessimistic for an NPU (its service time barely varies), which
    is the safe side for a plan. Returns 0 when even an idle node misses the SLO.
    """
    service = to_decimal(service_seconds)
    slo = to_decimal(p99_slo_seconds)
    q = to_decimal(quantile)
    if service <= 0 or slo <= 0 or not 0 < q < 1:
        raise ValueError("service and SLO must be > 0 and the quantile within (0, 1)")
    factor = (1 / (1 - q)).ln()
    return max(Decimal(0), 1 - factor * service / slo)


@dataclass(frozen=True)
class KindPlan:
    """The fleet one accelerator kind needs to carry the whole load on its own."""

    kind: str
    busy_devices: Decimal
    """NPU-seconds of work per second: the number of fully busy devices the load equals."""
    max_utilisation: Decimal
    serving_devices: int
    spare_devices: int
    fleet: FleetCost
    inferences_per_year: Decimal
    unserved: tuple[str, ...] = ()
    """Models this kind cannot serve: no measured throughput, or too slow for their SLO."""
    cloud_usd_per_year: Decimal | None = None

    @property
    def devices(self) -> int:
        """N + K."""
        return self.serving_devices + self.spare_devices

    @property
    def feasible(self) -> bool:
        return not self.unserved

    @property
    def utilisation(self) -> Decimal:
        """Per-node utilisation with all N+K up."""
        return self.busy_devices / self.devices if self.devices else Decimal(0)

    @property
    def utilisation_after_failures(self) -> Decimal:
        """Per-node utilisation when K nodes are down: must stay <= ``max_utilisation``."""
        return self.busy_devices / self.serving_devices if self.serving_devices else Decimal(0)

    @property
    def edge_usd_per_year(self) -> Decimal:
        return self.fleet.total_usd_per_year

    @property
    def per_inference_usd(self) -> Decimal | None:
        if self.inferences_per_year <= 0:
            return None
        return self.edge_usd_per_year / self.inferences_per_year

    @property
    def savings_vs_cloud_usd_per_year(self) -> Decimal | None:
        """Positive when the edge fleet is cheaper than sending everything to the cloud."""
        if self.cloud_usd_per_year is None:
            return None
        return self.cloud_usd_per_year - self.edge_usd_per_year


@dataclass(frozen=True)
class CapacityPlan:
    """One plan per accelerator kind, and the cheapest feasible one."""

    plans: tuple[KindPlan, ...]

    @property
    def cheapest(self) -> KindPlan | None:
        feasible = [p for p in self.plans if p.feasible]
        return min(feasible, key=lambda p: p.edge_usd_per_year, default=None)


def plan_kind(
    loads: Sequence[ModelLoad],
    kind: AcceleratorKind,
    *,
    max_utilisation: Number = DEFAULT_MAX_UTILISATION,
    failures: int = 1,
    shared_ops_usd_per_year: Number = 0,
    cloud_per_inference_usd: Decimal | None = None,
) -> KindPlan:
    """Size an N+K fleet of ``kind`` for ``loads``.

    The utilisation ceiling is ``max_utilisation``, lowered further by the M/M/1 bound of
    any model that carries a p99 SLO. N = ceil(busy / ceiling), so the ceiling holds with K
    nodes down; this treats the pool's NPU time as fungible, which holds when every node
    can load every model (the router spreads requests across replicas).
    """
    ceiling = to_decimal(max_utilisation)
    if not 0 < ceiling <= 1:
        raise ValueError(f"max_utilisation must be within (0, 1], got {ceiling}")
    if failures < 0:
        raise ValueError(f"failures must be >= 0, got {failures}")
    busy = Decimal(0)
    unserved: list[str] = []
    for load in loads:
        fps = kind.fps.get(load.model)
        if fps is None:
            if load.requests_per_second > 0:
                unserved.append(load.model)
            continue
        busy += load.requests_per_second / fps
        if load.p99_slo_seconds is not None and load.requests_per_second > 0:
            bound = mm1_max_utilisation(1 / fps, load.p99_slo_seconds)
            if bound <= 0:
                unserved.append(load.model)
            else:
                ceiling = min(ceiling, bound)
    serving = int((busy / ceiling).to_integral_value(rounding=ROUND_CEILING))
    spare = failures if serving > 0 else 0
    fleet = fleet_annual_cost(kind.cost, serving + spare, shared_ops_usd_per_year)
    volume = sum((load.requests_per_second for load in loads), Decimal(0)) * SECONDS_PER_YEAR
    cloud = None if cloud_per_inference_usd is None else volume * cloud_per_inference_usd
    return KindPlan(
        kind=kind.name,
        busy_devices=busy,
        max_utilisation=ceiling,
        serving_devices=serving,
        spare_devices=spare,
        fleet=fleet,
        inferences_per_year=volume,
        unserved=tuple(unserved),
        cloud_usd_per_year=cloud,
    )


def plan_capacity(
    loads: Sequence[ModelLoad],
    kinds: Sequence[AcceleratorKind],
    *,
    max_utilisation: Number = DEFAULT_MAX_UTILISATION,
    failures: int = 1,
    shared_ops_usd_per_year: Number = 0,
    cloud_per_inference_usd: Decimal | None = None,
) -> CapacityPlan:
    """Plan every kind side by side so the cheapest fleet that meets the SLO can be chosen."""
    return CapacityPlan(
        plans=tuple(
            plan_kind(
                loads,
                kind,
                max_utilisation=max_utilisation,
                failures=failures,
                shared_ops_usd_per_year=shared_ops_usd_per_year,
                cloud_per_inference_usd=cloud_per_inference_usd,
            )
            for kind in kinds
        )
    )
