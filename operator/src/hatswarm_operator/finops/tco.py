"""Edge FinOps cost model: pure functions, no I/O, ``Decimal`` wherever money is summed.

The model is the seed article's: a device's annual cost is its capex (Pi 5 + AI HAT+) spread
over its lifespan, plus energy (watts x 8760 h x price per kWh), plus management and
connectivity per device-year; a fleet adds shared ops per year. Cost per inference divides
that by the inferences a device serves in a year. The cloud is a variable cost (an hourly
price over a measured throughput, or a price per 1k inferences), so edge and cloud meet at a
break-even volume. The live half (attribution by NPU seconds, measured energy, cloud-fallback
spend) feeds the operator's cost status from the counters each agent reports
(``ModelStatus.compute_seconds``, ``energy_joules``, ``NodeStatus.watts``).

Everything is ``Decimal`` so that sums of money are exact; floats appear only at the edges
(JSON output, plotting). Quotients such as ``205 / 3`` are rounded at 28 significant digits,
far below a cent.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from hatswarm_operator.finops.money import Number, to_decimal

HOURS_PER_YEAR = Decimal(8760)
"""The seed's year: 365 days of 24 hours (no leap days)."""
DAYS_PER_YEAR = Decimal(365)
SECONDS_PER_YEAR = HOURS_PER_YEAR * 3600
JOULES_PER_KWH = Decimal(3_600_000)
_THOUSAND = Decimal(1000)
_ZERO = Decimal(0)

EnergySource = Literal["measured", "nameplate"]


def _non_negative(name: str, value: Decimal) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _positive(name: str, value: Decimal) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


# --------------------------------------------------------------------------- device and fleet


@dataclass(frozen=True)
class DeviceCostInputs:
    """One node's cost assumptions; the defaults are the seed article's example device."""

    device_price_usd: Decimal = Decimal(75)
    hat_price_usd: Decimal = Decimal(130)
    lifespan_years: Decimal = Decimal(3)
    watts: Decimal = Decimal(10)
    electricity_usd_per_kwh: Decimal = Decimal("0.12")
    mgmt_usd_per_device_year: Decimal = Decimal(60)
    connectivity_usd_per_device_year: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for name in (
            "device_price_usd",
            "hat_price_usd",
            "lifespan_years",
            "watts",
            "electricity_usd_per_kwh",
            "mgmt_usd_per_device_year",
            "connectivity_usd_per_device_year",
        ):
            value = to_decimal(getattr(self, name))
            object.__setattr__(self, name, value)
            _non_negative(name, value)
        _positive("lifespan_years", self.lifespan_years)

    @property
    def capex_usd(self) -> Decimal:
        """Hardware bought once per device: the board plus its HAT+."""
        return self.device_price_usd + self.hat_price_usd


@dataclass(frozen=True)
class DeviceCost:
    """One device's annual cost, by component, so a report can show where money goes."""

    capex_usd_per_year: Decimal
    energy_kwh_per_year: Decimal
    energy_usd_per_year: Decimal
    mgmt_usd_per_year: Decimal
    connectivity_usd_per_year: Decimal

    @property
    def total_usd_per_year(self) -> Decimal:
        return (
            self.capex_usd_per_year
            + self.energy_usd_per_year
            + self.mgmt_usd_per_year
            + self.connectivity_usd_per_year
        )

    @property
    def fixed_usd_per_year(self) -> Decimal:
        """Everything but energy: accrues with time whether the node is busy or not."""
        return self.total_usd_per_year - self.energy_usd_per_year


def device_annual_cost(inputs: DeviceCostInputs) -> DeviceCost:
    """(device + HAT+) / lifespan + watts x 8760 h x price + mgmt + connectivity."""
    kwh = inputs.watts * HOURS_PER_YEAR / _THOUSAND
    return DeviceCost(
        capex_usd_per_year=inputs.capex_usd / inputs.lifespan_years,
        energy_kwh_per_year=kwh,
        energy_usd_per_year=kwh * inputs.electricity_usd_per_kwh,
        mgmt_usd_per_year=inputs.mgmt_usd_per_device_year,
        connectivity_usd_per_year=inputs.connectivity_usd_per_device_year,
    )


@dataclass(frozen=True)
class FleetCost:
    """A fleet of identical devices plus the shared ops cost (staff, monitoring) per year."""

    devices: int
    device: DeviceCost
    shared_ops_usd_per_year: Decimal

    @property
    def capex_usd_per_year(self) -> Decimal:
        return self.device.capex_usd_per_year * self.devices

    @property
    def energy_usd_per_year(self) -> Decimal:
        return self.device.energy_usd_per_year * self.devices

    @property
    def mgmt_usd_per_year(self) -> Decimal:
        return self.device.mgmt_usd_per_year * self.devices

    @property
    def connectivity_usd_per_year(self) -> Decimal:
        return self.device.connectivity_usd_per_year * self.devices

    @property
    def total_usd_per_year(self) -> Decimal:
        return self.device.total_usd_per_year * self.devices + self.shared_ops_usd_per_year

    @property
    def per_device_usd_per_year(self) -> Decimal:
        """Fleet cost including shared ops, spread over the devices (the seed's $339/kiosk)."""
        if self.devices == 0:
            return self.shared_ops_usd_per_year
        return self.total_usd_per_year / self.devices


def fleet_annual_cost(
    inputs: DeviceCostInputs, devices: int = 1, shared_ops_usd_per_year: Number = 0
) -> FleetCost:
    """Annual cost of ``devices`` identical nodes plus the shared ops line."""
    if devices < 0:
        raise ValueError(f"devices must be >= 0, got {devices}")
    shared = to_decimal(shared_ops_usd_per_year)
    _non_negative("shared_ops_usd_per_year", shared)
    return FleetCost(
        devices=devices, device=device_annual_cost(inputs), shared_ops_usd_per_year=shared
    )


# --------------------------------------------------------------------------------- volumes


def inferences_per_year_from_rate(per_second: Number) -> Decimal:
    """Steady throughput (inferences/s) to a year's inferences (1/s is 31,536,000)."""
    rate = to_decimal(per_second)
    _non_negative("per_second", rate)
    return rate * SECONDS_PER_YEAR


def inferences_per_year_from_daily(per_day: Number) -> Decimal:
    """A daily volume (the seed's 1,000 interactions a day) to a year's inferences."""
    daily = to_decimal(per_day)
    _non_negative("per_day", daily)
    return daily * DAYS_PER_YEAR


def cost_per_inference(annual_cost_usd: Decimal, inferences_per_year: Decimal) -> Decimal:
    """Annual cost over annual volume; idle hardware still costs, so low volume is expensive."""
    _positive("inferences_per_year", inferences_per_year)
    return annual_cost_usd / inferences_per_year


# ----------------------------------------------------------------------------------- cloud


def cloud_per_inference_from_hourly(usd_per_hour: Number, inferences_per_hour: Number) -> Decimal:
    """The seed's cloud model: a GPU at $X/hour serving Y inferences/hour costs X / Y each."""
    price = to_decimal(usd_per_hour)
    volume = to_decimal(inferences_per_hour)
    _non_negative("usd_per_hour", price)
    _positive("inferences_per_hour", volume)
    return price / volume


def cloud_per_inference_from_per_1k(usd_per_1k: Number) -> Decimal:
    """An API priced per 1,000 inferences."""
    price = to_decimal(usd_per_1k)
    _non_negative("usd_per_1k", price)
    return price / _THOUSAND


def break_even_per_device_day(
    per_device_usd_per_year: Decimal, cloud_per_inference_usd: Decimal
) -> Decimal | None:
    """Daily volume per device at which edge and cloud cost the same per inference.

    Edge cost is fixed per device, so its per-inference cost falls as 1/volume while the
    cloud's stays flat: above this volume the edge is cheaper. ``None`` if the cloud is free.
    """
    if cloud_per_inference_usd <= 0:
        return None
    return per_device_usd_per_year / (cloud_per_inference_usd * DAYS_PER_YEAR)


@dataclass(frozen=True)
class BlendedCost:
    """A year of traffic when a share of it falls back to the cloud (the hybrid pattern)."""

    inferences_per_year: Decimal
    cloud_share: Decimal
    edge_usd_per_year: Decimal
    cloud_usd_per_year: Decimal

    @property
    def total_usd_per_year(self) -> Decimal:
        return self.edge_usd_per_year + self.cloud_usd_per_year

    @property
    def per_inference_usd(self) -> Decimal:
        return self.total_usd_per_year / self.inferences_per_year


def blended_cost(
    edge_usd_per_year: Decimal,
    inferences_per_year: Decimal,
    cloud_share: Number,
    cloud_per_inference_usd: Decimal,
) -> BlendedCost:
    """Edge cost stays whole (the devices are bought either way); only the share sent to
    the cloud adds variable spend. Averaging the two per-inference figures would wrongly
    shrink the edge part as traffic leaves it."""
    share = to_decimal(cloud_share)
    if not 0 <= share <= 1:
        raise ValueError(f"cloud_share must be within [0, 1], got {share}")
    _positive("inferences_per_year", inferences_per_year)
    return BlendedCost(
        inferences_per_year=inferences_per_year,
        cloud_share=share,
        edge_usd_per_year=edge_usd_per_year,
        cloud_usd_per_year=inferences_per_year * share * cloud_per_inference_usd,
    )


def cloud_fallback_spend(fallback_requests: int, usd_per_1k: Number) -> Decimal:
    """What the requests an agent forwarded to the cloud cost, shown beside edge cost."""
    if fallback_requests < 0:
        raise ValueError(f"fallback_requests must be >= 0, got {fallback_requests}")
    return Decimal(fallback_requests) * cloud_per_inference_from_per_1k(usd_per_1k)


# ---------------------------------------------------------------------------------- energy


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy over a window and what it cost, saying whether it was measured or assumed."""

    joules: Decimal
    usd: Decimal
    source: EnergySource

    @property
    def kwh(self) -> Decimal:
        return self.joules / JOULES_PER_KWH


def integrate_watts(samples: Sequence[tuple[float, float]]) -> Decimal:
    """Joules from ``(unix_seconds, watts)`` samples by the trapezoid rule, in time order.

    NaN samples (the agent reports NaN when it cannot read power) are skipped.
    """
    points = sorted(
        (to_decimal(t), to_decimal(w)) for t, w in samples if math.isfinite(w) and math.isfinite(t)
    )
    joules = _ZERO
    for (t0, w0), (t1, w1) in itertools.pairwise(points):
        joules += (w0 + w1) / 2 * (t1 - t0)
    return joules


def window_energy(
    window_seconds: Number,
    nameplate_watts: Number,
    electricity_usd_per_kwh: Number,
    *,
    watt_samples: Sequence[tuple[float, float]] = (),
    measured_joules: Number | None = None,
) -> EnergyEstimate:
    """Energy for a window: measured if we have it, else nameplate watts x window.

    Precedence: ``measured_joules`` (e.g. the sum of per-model ``energy_joules`` deltas),
    then power samples (their mean power over the sampled span, applied to the whole
    window, since a scrape series rarely covers it to the second), then nameplate watts.
    """
    window = to_decimal(window_seconds)
    price = to_decimal(electricity_usd_per_kwh)
    _non_negative("window_seconds", window)
    _non_negative("electricity_usd_per_kwh", price)
    joules: Decimal
    source: EnergySource = "measured"
    finite = [(t, w) for t, w in watt_samples if math.isfinite(t) and math.isfinite(w)]
    span = (
        to_decimal(max(t for t, _ in finite)) - to_decimal(min(t for t, _ in finite))
        if finite
        else _ZERO
    )
    if measured_joules is not None:
        joules = to_decimal(measured_joules)
        _non_negative("measured_joules", joules)
    elif span > 0:
        joules = integrate_watts(finite) / span * window
    else:
        watts = to_decimal(nameplate_watts)
        _non_negative("nameplate_watts", watts)
        joules = watts * window
        source = "nameplate"
    return EnergyEstimate(joules=joules, usd=joules / JOULES_PER_KWH * price, source=source)


# ----------------------------------------------------------------------------- attribution


@dataclass(frozen=True)
class NodeWindowCost:
    """What one node cost over a window: time-based fixed part plus energy."""

    window_seconds: Decimal
    fixed_usd: Decimal
    energy: EnergyEstimate

    @property
    def total_usd(self) -> Decimal:
        return self.fixed_usd + self.energy.usd


def node_window_cost(
    inputs: DeviceCostInputs,
    window_seconds: Number,
    *,
    watt_samples: Sequence[tuple[float, float]] = (),
    measured_joules: Number | None = None,
) -> NodeWindowCost:
    """Capex, mgmt and connectivity accrue pro rata; energy is measured when available."""
    window = to_decimal(window_seconds)
    _non_negative("window_seconds", window)
    fixed = device_annual_cost(inputs).fixed_usd_per_year * window / SECONDS_PER_YEAR
    energy = window_energy(
        window,
        inputs.watts,
        inputs.electricity_usd_per_kwh,
        watt_samples=watt_samples,
        measured_joules=measured_joules,
    )
    return NodeWindowCost(window_seconds=window, fixed_usd=fixed, energy=energy)


@dataclass(frozen=True)
class ModelUsage:
    """One model's activity on a node over a window (deltas of the agent's counters)."""

    model: str
    compute_seconds: Decimal
    inferences: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "compute_seconds", to_decimal(self.compute_seconds))
        _non_negative("compute_seconds", self.compute_seconds)
        if self.inferences < 0:
            raise ValueError(f"inferences must be >= 0, got {self.inferences}")


@dataclass(frozen=True)
class ModelCost:
    """A model's share of a node's cost; per 1k is ``None`` when it served nothing."""

    model: str
    compute_seconds: Decimal
    share: Decimal
    usd: Decimal
    inferences: int

    @property
    def per_1k_inferences_usd(self) -> Decimal | None:
        if self.inferences == 0:
            return None
        return self.usd * _THOUSAND / self.inferences


@dataclass(frozen=True)
class Attribution:
    """Per-model costs plus the idle remainder when a capacity was given."""

    models: tuple[ModelCost, ...]
    idle_usd: Decimal = field(default=_ZERO)

    def by_model(self) -> dict[str, ModelCost]:
        return {m.model: m for m in self.models}


def attribute_node_cost(
    node_cost_usd: Number,
    usage: Sequence[ModelUsage],
    *,
    capacity_seconds: Number | None = None,
) -> Attribution:
    """Split a node's cost over the models it ran by NPU/compute seconds, not request count.

    A request to a big detector holds the NPU far longer than one to a classifier, so
    counting requests would make the cheap model subsidise the expensive one. Without
    ``capacity_seconds`` the whole cost is shared out by each model's share of busy time;
    with it (window length x NPU contexts) each model pays for the seconds it used and the
    unused rest is reported as ``idle_usd``, so showback makes idle hardware visible.
    Same model names are merged.
    """
    cost = to_decimal(node_cost_usd)
    _non_negative("node_cost_usd", cost)
    merged: dict[str, tuple[Decimal, int]] = {}
    for u in usage:
        seconds, count = merged.get(u.model, (_ZERO, 0))
        merged[u.model] = (seconds + u.compute_seconds, count + u.inferences)
    busy = sum((s for s, _ in merged.values()), _ZERO)
    if capacity_seconds is None:
        denominator = busy
    else:
        denominator = to_decimal(capacity_seconds)
        _positive("capacity_seconds", denominator)
        if busy > denominator:
            raise ValueError(f"models used {busy} s, more than the capacity {denominator} s")
    models: list[ModelCost] = []
    for name, (seconds, count) in merged.items():
        share = seconds / denominator if denominator > 0 else _ZERO
        models.append(
            ModelCost(
                model=name, compute_seconds=seconds, share=share, usd=cost * share, inferences=count
            )
        )
    attributed = sum((m.usd for m in models), _ZERO)
    return Attribution(models=tuple(models), idle_usd=cost - attributed)
