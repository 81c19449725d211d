"""Live cost attribution, pure: each tick's agent counters -> pool and per-model cost figures.

The control runtime calls :func:`account` once per tick with the pool's cost inputs and what every
node's agent reported (cumulative counters since each model was loaded, and node watts). A
:class:`CostLedger` remembers the last counters so that only the deltas are charged, and keeps
the running totals (money in ``Decimal``) that the status and the gauges show.

How a window is costed, per node (:func:`hatswarm_operator.finops.tco.node_window_cost`):

- the fixed part (capex over the lifespan, management, connectivity, and the node's equal
  share of the pool's shared ops) accrues with time, busy or idle, up or down;
- energy is *measured* when the agent reports it: node power samples (``watts``, integrated
  over the window; they cover idle draw too) first, else the sum of the per-model
  ``energy_joules`` deltas; else it is the *nameplate* watts x the window. A node that is down
  cannot report, so its window is nameplate;
- the node's cost is split over the models that ran on it by their share of its NPU (compute)
  seconds, never by request count: a detector holding the NPU 3x as long pays 3x. A node that
  ran nothing in the window is idle cost, counted in the pool's figures but in no model's.

Counters restart from zero when an agent restarts or a model is reloaded: a counter that went
down (or a new agent start time) means the current value is the whole delta. The first time a
node is seen its counters are only a baseline (the work before the operator watched it is not
charged to this window).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from hatswarm_operator.finops.money import to_decimal
from hatswarm_operator.finops.tco import (
    SECONDS_PER_YEAR,
    DeviceCostInputs,
    EnergySource,
    ModelUsage,
    attribute_node_cost,
    break_even_per_device_day,
    cloud_per_inference_from_per_1k,
    fleet_annual_cost,
    node_window_cost,
)
from hatswarm_operator.finops.tokens import (
    CLOUD,
    EDGE,
    MILLION,
    TokenKey,
    TokenPrices,
    sum_tokens,
)

if TYPE_CHECKING:
    from hatswarm_operator.api import InferencePool
    from hatswarm_operator.core.inventory import NodeState

_ZERO = Decimal(0)
_THOUSAND = Decimal(1000)


# ------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class ModelSample:
    """One model version's cumulative counters as an agent reported them."""

    model: str
    version: str = ""
    compute_seconds: float = 0.0
    inference_count: int = 0
    energy_joules: float = 0.0


@dataclass(frozen=True)
class NodeSample:
    """One node at one tick: its agent's counters, power, and cloud-fallback requests.

    ``cloud_fallback_requests`` is cumulative per model since the agent started (the agent's
    ``hatswarm_cloud_fallback_requests_total``). ``agent_started_at`` (any value that changes
    when the agent restarts, e.g. now - uptime) makes restart detection exact; without it a
    counter that went down is the sign.
    """

    node: str
    up: bool = True
    models: tuple[ModelSample, ...] = ()
    watts: float | None = None
    cloud_fallback_requests: Mapping[str, int] = field(default_factory=dict)
    agent_started_at: float | None = None
    tokens: Mapping[TokenKey, int] = field(default_factory=dict)
    """Cumulative tokens since the agent started by (model, kind, where) (NodeStatus.tokens)."""


@dataclass(frozen=True)
class PoolCostInputs:
    """What a pool's spec says about money: per-device inputs, shared ops, the cloud price."""

    device: DeviceCostInputs = field(default_factory=DeviceCostInputs)
    shared_ops_usd_per_year: Decimal = _ZERO
    cloud_usd_per_1k: Decimal | None = None
    cloud_tokens: TokenPrices | None = None
    """The cloud's prices per 1M input and output tokens (generations)."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "shared_ops_usd_per_year", to_decimal(self.shared_ops_usd_per_year)
        )
        if self.cloud_usd_per_1k is not None:
            object.__setattr__(self, "cloud_usd_per_1k", to_decimal(self.cloud_usd_per_1k))


def pool_cost_inputs(pool: InferencePool) -> PoolCostInputs:
    """The cost block and cloud price of an InferencePool spec."""
    c = pool.spec.cost
    device = DeviceCostInputs(
        device_price_usd=to_decimal(c.device_price_usd),
        hat_price_usd=to_decimal(c.hat_price_usd),
        lifespan_years=to_decimal(c.lifespan_years),
        watts=to_decimal(c.watts),
        electricity_usd_per_kwh=to_decimal(c.electricity_usd_per_kwh),
        mgmt_usd_per_device_year=to_decimal(c.mgmt_usd_per_device_year),
        connectivity_usd_per_device_year=to_decimal(c.connectivity_usd_per_device_year),
    )
    cloud = pool.spec.cloud_fallback
    return PoolCostInputs(
        device=device,
        shared_ops_usd_per_year=to_decimal(c.shared_ops_usd_per_year),
        cloud_usd_per_1k=None if cloud is None else to_decimal(cloud.price_per1k_usd),
        cloud_tokens=(
            TokenPrices(
                to_decimal(cloud.openai.price_per1m_input_usd),
                to_decimal(cloud.openai.price_per1m_output_usd),
            )
            if cloud is not None and cloud.openai is not None
            else None
        ),
    )


def node_samples(
    nodes: Iterable[NodeState],
    cloud_fallback_requests: Mapping[str, Mapping[str, int]] | None = None,
) -> tuple[NodeSample, ...]:
    """Adapt the inventory's probed nodes (``NodeState``) into samples.

    Cloud-fallback counters come from each node's probe (NodeStatus carries them); a mapping
    per node name (model -> cumulative requests) overrides them when known from elsewhere.
    """
    fallback = cloud_fallback_requests or {}
    return tuple(
        NodeSample(
            node=n.name,
            up=n.up,
            models=tuple(
                ModelSample(
                    model=o.name,
                    version=o.version,
                    compute_seconds=o.compute_seconds,
                    inference_count=o.inference_count,
                    energy_joules=o.energy_joules,
                )
                for o in n.models
            ),
            watts=n.watts,
            cloud_fallback_requests=dict(fallback.get(n.name, n.cloud_requests)),
            tokens=dict(n.tokens),
        )
        for n in nodes
    )


# ------------------------------------------------------------------------------------ ledger


@dataclass
class ModelTotals:
    """A model's running totals since the ledger started."""

    usd: Decimal = _ZERO
    inferences: int = 0
    compute_seconds: Decimal = _ZERO

    @property
    def per_inference_usd(self) -> Decimal | None:
        return self.usd / self.inferences if self.inferences else None


@dataclass
class _NodeMemory:
    seen_at: float
    counters: dict[tuple[str, str], ModelSample] = field(default_factory=dict)
    fallback: dict[str, int] = field(default_factory=dict)
    tokens: dict[TokenKey, int] = field(default_factory=dict)
    watts: tuple[float, float] | None = None  # (time, watts) of the last finite reading
    agent_started_at: float | None = None
    reports_energy: bool = False  # its backend has reported per-model energy at least once


@dataclass
class CostLedger:
    """The accumulator one pool's runtime keeps between ticks (plain data, no I/O)."""

    nodes: dict[str, _NodeMemory] = field(default_factory=dict)
    models: dict[str, ModelTotals] = field(default_factory=dict)
    edge_usd: Decimal = _ZERO
    """Everything the pool's nodes cost so far, attributed or idle."""
    idle_usd: Decimal = _ZERO
    energy_usd: Decimal = _ZERO
    energy_joules: Decimal = _ZERO
    node_seconds: Decimal = _ZERO
    inferences: int = 0
    cloud_fallback_requests: int = 0
    cloud_fallback_usd: Decimal = _ZERO
    cloud_fallback_by_model: dict[str, int] = field(default_factory=dict)
    tokens: dict[TokenKey, int] = field(default_factory=dict)
    """Tokens counted since the ledger started, by (model, kind, where)."""
    cloud_token_usd: Decimal = _ZERO
    """The cloud's tokens at its per-1M prices (included in cloud_fallback_usd)."""


# ------------------------------------------------------------------------------------ output


@dataclass(frozen=True)
class ModelLiveCost:
    """One model: this tick's attributed spend and the running totals."""

    model: str
    window_usd: Decimal
    window_inferences: int
    window_compute_seconds: Decimal
    total_usd: Decimal
    total_inferences: int
    total_compute_seconds: Decimal

    @property
    def per_inference_usd(self) -> Decimal | None:
        return self.total_usd / self.total_inferences if self.total_inferences else None

    @property
    def per_1k_usd(self) -> Decimal | None:
        per = self.per_inference_usd
        return None if per is None else per * _THOUSAND


@dataclass(frozen=True)
class LiveCost:
    """The pool's cost figures after one tick (exact; round only when writing status)."""

    devices: int
    per_device_year_usd: Decimal
    fleet_per_year_usd: Decimal
    energy_source: EnergySource
    measured_per_inference_usd: Decimal | None
    cloud_per_inference_usd: Decimal | None
    break_even_per_device_day: Decimal | None
    cloud_fallback_spend_usd: Decimal
    cloud_fallback_requests: int
    window_seconds: Decimal
    window_usd: Decimal
    window_cloud_fallback_usd: Decimal
    edge_usd: Decimal
    idle_usd: Decimal
    inferences: int
    models: Mapping[str, ModelLiveCost]
    tokens: Mapping[TokenKey, int] = field(default_factory=dict)
    cloud_tokens: TokenPrices | None = None
    cloud_token_spend_usd: Decimal = _ZERO

    @property
    def edge_tokens(self) -> int:
        return sum_tokens(self.tokens, where=EDGE)

    @property
    def cloud_token_count(self) -> int:
        return sum_tokens(self.tokens, where=CLOUD)

    @property
    def edge_per_1m_tokens_usd(self) -> Decimal | None:
        """The edge spend of the models that processed tokens, per 1M of their edge tokens."""
        names = {m for (m, _, w), n in self.tokens.items() if w == EDGE and n > 0}
        tokens = sum_tokens({k: n for k, n in self.tokens.items() if k[0] in names}, where=EDGE)
        if not tokens:
            return None
        usd = sum((self.models[m].total_usd for m in names if m in self.models), _ZERO)
        return usd / tokens * MILLION

    @property
    def per_1k_usd(self) -> Decimal | None:
        per = self.measured_per_inference_usd
        return None if per is None else per * _THOUSAND

    @property
    def cloud_per_1k_usd(self) -> Decimal | None:
        per = self.cloud_per_inference_usd
        return None if per is None else per * _THOUSAND


# -------------------------------------------------------------------------------- accounting


def _delta(now: float, before: float | None) -> float:
    """A cumulative counter's increase; a drop means it restarted from zero."""
    if before is None or now < before:
        return max(now, 0.0)
    return now - before


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def account(
    ledger: CostLedger, inputs: PoolCostInputs, nodes: Sequence[NodeSample], now: float
) -> LiveCost:
    """Charge the window since each node's last tick and return the pool's figures.

    Mutates ``ledger`` (and only it). ``nodes`` are the pool's nodes, up or down; a node that
    left the pool is forgotten, one that joins starts from a baseline.
    """
    names = {n.node for n in nodes}
    for gone in [name for name in ledger.nodes if name not in names]:
        del ledger.nodes[gone]
    devices = len(nodes)
    shared_per_node_per_year = (
        inputs.shared_ops_usd_per_year / devices if devices else inputs.shared_ops_usd_per_year
    )
    device = inputs.device
    cloud_per_inference = (
        None
        if inputs.cloud_usd_per_1k is None
        else cloud_per_inference_from_per_1k(inputs.cloud_usd_per_1k)
    )

    window_models: dict[str, tuple[Decimal, int, Decimal]] = {}
    window_usd = _ZERO
    window_seconds = _ZERO
    window_fallback_usd = _ZERO
    up_nodes = 0
    measured_up = 0
    for sample in sorted(nodes, key=lambda n: n.node):
        mem = ledger.nodes.get(sample.node)
        if mem is None:
            # First sight: counters are a baseline, no time has passed for this node yet.
            mem = _NodeMemory(seen_at=now)
            ledger.nodes[sample.node] = mem
            if sample.up:
                _remember(mem, sample, now)
                up_nodes += 1
                measured_up += _finite(sample.watts) or mem.reports_energy
            continue
        span = max(now - mem.seen_at, 0.0)
        mem.seen_at = now
        window = to_decimal(span)
        window_seconds = max(window_seconds, window)

        usage: list[ModelUsage] = []
        joules = _ZERO
        watt_samples: list[tuple[float, float]] = []
        if sample.up:
            up_nodes += 1
            restarted = (
                sample.agent_started_at is not None
                and mem.agent_started_at is not None
                and sample.agent_started_at != mem.agent_started_at
            )
            if restarted:
                mem.counters.clear()
                mem.fallback.clear()
                mem.tokens.clear()
            for key, count in sample.tokens.items():
                n = int(_delta(count, mem.tokens.get(key)))
                if n:
                    ledger.tokens[key] = ledger.tokens.get(key, 0) + n
                    if key[2] == CLOUD and inputs.cloud_tokens is not None:
                        prices = inputs.cloud_tokens
                        spend = (
                            prices.cost_usd(n, 0) if key[1] == "prompt" else prices.cost_usd(0, n)
                        )
                        ledger.cloud_token_usd += spend
                        ledger.cloud_fallback_usd += spend
                        window_fallback_usd += spend
            for m in sample.models:
                before = mem.counters.get((m.model, m.version))
                reset = before is not None and (
                    m.compute_seconds < before.compute_seconds
                    or m.inference_count < before.inference_count
                    or m.energy_joules < before.energy_joules
                )
                base = None if before is None or reset else before
                busy = _delta(m.compute_seconds, base.compute_seconds if base else None)
                done = int(_delta(m.inference_count, base.inference_count if base else None))
                energy = _delta(m.energy_joules, base.energy_joules if base else None)
                usage.append(ModelUsage(m.model, to_decimal(busy), done))
                joules += to_decimal(energy)
            for model, requests in sample.cloud_fallback_requests.items():
                n = int(_delta(requests, mem.fallback.get(model)))
                if n:
                    ledger.cloud_fallback_by_model[model] = (
                        ledger.cloud_fallback_by_model.get(model, 0) + n
                    )
                    ledger.cloud_fallback_requests += n
                    if cloud_per_inference is not None:
                        spend = cloud_per_inference * n
                        ledger.cloud_fallback_usd += spend
                        window_fallback_usd += spend
            if _finite(sample.watts):
                assert sample.watts is not None
                if mem.watts is not None:
                    watt_samples.append(mem.watts)
                watt_samples.append((now, sample.watts))
            _remember(mem, sample, now)
        else:
            mem.watts = None  # a reading from before an outage says nothing about after it

        measured_joules: Decimal | None = None
        if len(watt_samples) == 1:
            measured_joules = to_decimal(watt_samples[0][1]) * window
            watt_samples = []
        elif not watt_samples and sample.up and mem.reports_energy:
            measured_joules = joules  # may be 0: an idle window of a backend that measures
        cost = node_window_cost(
            device, window, watt_samples=watt_samples, measured_joules=measured_joules
        )
        shared = shared_per_node_per_year * window / SECONDS_PER_YEAR
        node_usd = cost.total_usd + shared
        if sample.up and cost.energy.source == "measured":
            measured_up += 1

        attribution = attribute_node_cost(node_usd, usage)
        for mc in attribution.models:
            usd, count, seconds = window_models.get(mc.model, (_ZERO, 0, _ZERO))
            window_models[mc.model] = (
                usd + mc.usd,
                count + mc.inferences,
                seconds + mc.compute_seconds,
            )
        ledger.edge_usd += node_usd
        ledger.idle_usd += attribution.idle_usd
        ledger.energy_usd += cost.energy.usd
        ledger.energy_joules += cost.energy.joules
        ledger.node_seconds += window
        window_usd += node_usd

    models: dict[str, ModelLiveCost] = {}
    for name, (usd, count, seconds) in window_models.items():
        totals = ledger.models.setdefault(name, ModelTotals())
        totals.usd += usd
        totals.inferences += count
        totals.compute_seconds += seconds
        ledger.inferences += count
    for name, totals in ledger.models.items():
        usd, count, seconds = window_models.get(name, (_ZERO, 0, _ZERO))
        models[name] = ModelLiveCost(
            model=name,
            window_usd=usd,
            window_inferences=count,
            window_compute_seconds=seconds,
            total_usd=totals.usd,
            total_inferences=totals.inferences,
            total_compute_seconds=totals.compute_seconds,
        )

    measured = up_nodes > 0 and measured_up == up_nodes
    per_device_year, fleet_year = _annual(ledger, inputs, devices, measured)
    return LiveCost(
        devices=devices,
        per_device_year_usd=per_device_year,
        fleet_per_year_usd=fleet_year,
        energy_source="measured" if measured else "nameplate",
        measured_per_inference_usd=(
            ledger.edge_usd / ledger.inferences if ledger.inferences else None
        ),
        cloud_per_inference_usd=cloud_per_inference,
        break_even_per_device_day=(
            None
            if cloud_per_inference is None
            else break_even_per_device_day(per_device_year, cloud_per_inference)
        ),
        cloud_fallback_spend_usd=ledger.cloud_fallback_usd,
        cloud_fallback_requests=ledger.cloud_fallback_requests,
        window_seconds=window_seconds,
        window_usd=window_usd,
        window_cloud_fallback_usd=window_fallback_usd,
        edge_usd=ledger.edge_usd,
        idle_usd=ledger.idle_usd,
        inferences=ledger.inferences,
        models=models,
        tokens=dict(ledger.tokens),
        cloud_tokens=inputs.cloud_tokens,
        cloud_token_spend_usd=ledger.cloud_token_usd,
    )


def _remember(mem: _NodeMemory, sample: NodeSample, now: float) -> None:
    for m in sample.models:
        mem.counters[(m.model, m.version)] = m
    for model, requests in sample.cloud_fallback_requests.items():
        mem.fallback[model] = requests
    mem.tokens.update(sample.tokens)
    if _finite(sample.watts):
        assert sample.watts is not None
        mem.watts = (now, sample.watts)
    mem.agent_started_at = sample.agent_started_at
    mem.reports_energy = mem.reports_energy or any(m.energy_joules > 0 for m in sample.models)


def _annual(
    ledger: CostLedger, inputs: PoolCostInputs, devices: int, measured: bool
) -> tuple[Decimal, Decimal]:
    """(one device-year with its share of shared ops, the fleet's year); energy annualised
    from what was measured so far when the pool's energy is measured, else nameplate."""
    fleet = fleet_annual_cost(inputs.device, devices, inputs.shared_ops_usd_per_year)
    per_device = fleet_annual_cost(
        inputs.device, max(devices, 1), inputs.shared_ops_usd_per_year
    ).per_device_usd_per_year
    total = fleet.total_usd_per_year
    if measured and ledger.node_seconds > 0:
        extra = ledger.energy_usd / ledger.node_seconds * SECONDS_PER_YEAR
        extra -= fleet.device.energy_usd_per_year
        per_device += extra
        total += extra * devices
    return per_device, total
