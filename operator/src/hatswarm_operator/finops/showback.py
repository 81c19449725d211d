"""Showback for a window, by team and model, collected from Prometheus (`hatswarm cost report`).

The edge cost is recomputed from the agents' own counters with the same model the operator
uses live (:mod:`tco`, :mod:`attribution`): each scraped agent is a device whose cost over the
window (capex over its lifespan, management, connectivity, shared ops, and energy: measured
from ``hatswarm_npu_power_watts`` samples or ``hatswarm_model_energy_joules_total`` when the
agent reports them, else nameplate) is split over the models it ran by their share of its
NPU seconds (``hatswarm_model_compute_seconds_total``). A device that ran nothing is idle
cost. The cloud side is what the agents recorded for their fallback requests (the list price
when they did not price them). Teams come from the EdgeModels' ``costAttribution``, else from
the operator's ``hatswarm_cost_usd_total`` labels, else "unassigned".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hatswarm_operator.finops import series
from hatswarm_operator.finops.attribution import PoolCostInputs
from hatswarm_operator.finops.metrics import Showback
from hatswarm_operator.finops.money import to_decimal
from hatswarm_operator.finops.promql import Prometheus, default_step, duration
from hatswarm_operator.finops.tco import (
    SECONDS_PER_YEAR,
    ModelUsage,
    attribute_node_cost,
    node_window_cost,
)
from hatswarm_operator.finops.tokens import MILLION

UNASSIGNED = "unassigned"
IDLE = "(idle devices)"
_ZERO = Decimal(0)
_AGENT_SERIES = series.any_of(
    series.MODELS_LOADED, series.ROUTE_REQUESTS, series.NPU_POWER, series.REQUEST_SUCCESS
)
"""Series every agent exposes: an instance with any of them in the window is a device."""


@dataclass
class ModelRow:
    model: str
    team: str = UNASSIGNED
    customer: str = ""
    product_line: str = ""
    requests: int = 0
    failed: int = 0
    inferences: int = 0
    compute_seconds: Decimal = _ZERO
    edge_usd: Decimal = _ZERO
    cloud_requests: int = 0
    cloud_usd: Decimal = _ZERO
    edge_prompt_tokens: int = 0
    edge_completion_tokens: int = 0
    cloud_prompt_tokens: int = 0
    cloud_completion_tokens: int = 0

    @property
    def total_usd(self) -> Decimal:
        return self.edge_usd + self.cloud_usd

    @property
    def edge_tokens(self) -> int:
        return self.edge_prompt_tokens + self.edge_completion_tokens

    @property
    def cloud_tokens(self) -> int:
        return self.cloud_prompt_tokens + self.cloud_completion_tokens

    @property
    def edge_per_1m_tokens(self) -> Decimal | None:
        return self.edge_usd * MILLION / self.edge_tokens if self.edge_tokens else None

    @property
    def cloud_per_1m_tokens(self) -> Decimal | None:
        return self.cloud_usd * MILLION / self.cloud_tokens if self.cloud_tokens else None

    @property
    def edge_per_1k(self) -> Decimal | None:
        return self.edge_usd * 1000 / self.inferences if self.inferences else None

    @property
    def cloud_per_1k(self) -> Decimal | None:
        return self.cloud_usd * 1000 / self.cloud_requests if self.cloud_requests else None

    @property
    def per_1k(self) -> Decimal | None:
        n = self.requests + self.cloud_requests
        return self.total_usd * 1000 / n if n else None


@dataclass
class NodeRow:
    instance: str
    usd: Decimal
    energy_source: str
    energy_joules: Decimal
    idle_usd: Decimal


@dataclass
class ShowbackReport:
    start: float
    end: float
    inputs_from: str
    models: list[ModelRow]
    nodes: list[NodeRow]
    timeline: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def idle_usd(self) -> Decimal:
        return sum((n.idle_usd for n in self.nodes), _ZERO)

    @property
    def edge_usd(self) -> Decimal:
        return sum((n.usd for n in self.nodes), _ZERO)

    @property
    def cloud_usd(self) -> Decimal:
        return sum((m.cloud_usd for m in self.models), _ZERO)

    @property
    def has_tokens(self) -> bool:
        return any(m.edge_tokens or m.cloud_tokens for m in self.models)

    def teams(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for m in self.models:
            t = rows.setdefault(
                m.team,
                {"team": m.team, "models": [], "requests": 0, "cloud_requests": 0,
                 "edge_usd": _ZERO, "cloud_usd": _ZERO, "edge_tokens": 0, "cloud_tokens": 0},
            )  # fmt: skip
            t["models"].append(m.model)
            t["requests"] += m.requests
            t["cloud_requests"] += m.cloud_requests
            t["edge_usd"] += m.edge_usd
            t["cloud_usd"] += m.cloud_usd
            t["edge_tokens"] += m.edge_tokens
            t["cloud_tokens"] += m.cloud_tokens
        out = sorted(rows.values(), key=lambda r: (-(r["edge_usd"] + r["cloud_usd"]), r["team"]))
        if self.idle_usd > 0:
            out.append(
                {"team": IDLE, "models": [], "requests": 0, "cloud_requests": 0,
                 "edge_usd": self.idle_usd, "cloud_usd": _ZERO, "edge_tokens": 0,
                 "cloud_tokens": 0}
            )  # fmt: skip
        for r in out:
            n = r["requests"] + r["cloud_requests"]
            total = r["edge_usd"] + r["cloud_usd"]
            r["per_1k_usd"] = total * 1000 / n if n else None
            tokens = r["edge_tokens"] + r["cloud_tokens"]
            r["per_1m_tokens_usd"] = total * MILLION / tokens if tokens else None
        return out


# --------------------------------------------------------------------------------- collect


def _labels_from_operator(prom: Prometheus, end: float, window: float) -> dict[str, Showback]:
    out: dict[str, Showback] = {}
    expr = (
        "group by (model, team, customer, product_line) "
        f"(last_over_time({series.COST_USD}[{duration(window)}]))"
    )
    for s in prom.query(expr, at=end):
        name = s.labels.get("model", "")
        if name:
            out[name] = Showback(
                s.labels.get("team", ""),
                s.labels.get("customer", ""),
                s.labels.get("product_line", ""),
            )
    return out


def collect(
    prom: Prometheus,
    start: float,
    end: float,
    *,
    inputs: PoolCostInputs,
    showback: Mapping[str, Showback] | None = None,
    inputs_from: str = "the seed's example device",
    step: float | None = None,
    rate_window: float | None = None,
) -> ShowbackReport:
    window = end - start
    tags = dict(showback or {})
    if not tags:
        tags = _labels_from_operator(prom, end, window)
    rows: dict[str, ModelRow] = {}

    def row(name: str) -> ModelRow:
        if name not in rows:
            t = tags.get(name, Showback())
            rows[name] = ModelRow(name, t.team or UNASSIGNED, t.customer, t.product_line)
        return rows[name]

    for (name,), n in prom.increase(series.REQUEST_SUCCESS, start, end, ("model",)).items():
        row(name).requests += round(n)
    for (name,), n in prom.increase(series.REQUEST_FAILURE, start, end, ("model",)).items():
        if name and round(n):
            row(name).requests += round(n)
            row(name).failed += round(n)
    for (name,), n in prom.increase(series.CLOUD_REQUESTS, start, end, ("model",)).items():
        if round(n):
            row(name).cloud_requests += round(n)
    recorded_cloud = prom.increase(series.CLOUD_COST, start, end, ("model",))
    for (name,), usd in recorded_cloud.items():
        if usd:
            row(name).cloud_usd += to_decimal(usd)
    tokens = prom.increase(series.TOKENS, start, end, ("model", "kind", "where"))
    for (name, kind, where), n in tokens.items():
        field_name = f"{where}_{kind}_tokens"
        if name and round(n) and hasattr(ModelRow, field_name):
            r = row(name)
            setattr(r, field_name, getattr(r, field_name) + round(n))
    for r in rows.values():  # agents that did not price their fallback: the list price
        if r.cloud_usd:
            continue
        if r.cloud_tokens and inputs.cloud_tokens is not None:
            r.cloud_usd = inputs.cloud_tokens.cost_usd(
                r.cloud_prompt_tokens, r.cloud_completion_tokens
            )
        elif r.cloud_requests and inputs.cloud_usd_per_1k is not None:
            r.cloud_usd = inputs.cloud_usd_per_1k * r.cloud_requests / 1000

    # Devices: every instance exposing agent series in the window.
    instances = sorted(
        {
            s.labels.get("instance", "")
            for s in prom.query(
                f"group by (instance) (last_over_time({_AGENT_SERIES}[{duration(window)}]))",
                at=end,
            )
        }
        - {""}
    )
    compute = prom.increase(series.COMPUTE_SECONDS, start, end, ("instance", "model"))
    inferences = prom.increase(series.INFERENCES, start, end, ("instance", "model"))
    joules = prom.increase(series.ENERGY_JOULES, start, end, ("instance",))
    power: dict[str, list[tuple[float, float]]] = {}
    for s in prom.query(f"{series.NPU_POWER}[{duration(window)}]", at=end):
        power.setdefault(s.labels.get("instance", ""), []).extend(
            (t, v) for t, v in s.points if start <= t <= end
        )
    shared_per_node = (
        (inputs.shared_ops_usd_per_year / len(instances) if instances else _ZERO)
        * to_decimal(window)
        / SECONDS_PER_YEAR
    )
    nodes: list[NodeRow] = []
    for instance in instances:
        samples = power.get(instance, [])
        measured = joules.get((instance,))
        cost = node_window_cost(
            inputs.device,
            to_decimal(window),
            watt_samples=samples,
            measured_joules=(
                None if len({t for t, _ in samples}) > 1 or not measured else to_decimal(measured)
            ),
        )
        usage = [
            ModelUsage(
                model,
                to_decimal(seconds),
                round(inferences.get((inst, model), 0.0)),
            )
            for (inst, model), seconds in compute.items()
            if inst == instance and seconds >= 0
        ]
        node_usd = cost.total_usd + shared_per_node
        attribution = attribute_node_cost(node_usd, usage)
        for mc in attribution.models:
            r = row(mc.model)
            r.edge_usd += mc.usd
            r.compute_seconds += mc.compute_seconds
            r.inferences += mc.inferences
        nodes.append(
            NodeRow(
                instance, node_usd, cost.energy.source, cost.energy.joules, attribution.idle_usd
            )
        )

    step = step or default_step(window)
    rw = rate_window or max(4 * step, 5.0)
    timeline: dict[str, list[tuple[float, float]]] = {}
    for key, expr in (
        ("edge", f"sum(rate({series.REQUEST_SUCCESS}[{duration(rw)}]))"),
        ("cloud", f"sum(rate({series.CLOUD_REQUESTS}[{duration(rw)}]))"),
    ):
        for s in prom.query_range(expr, start, end, step):
            timeline[key] = [(t, v) for t, v in s.points if math.isfinite(v)]
    return ShowbackReport(
        start=start,
        end=end,
        inputs_from=inputs_from,
        models=sorted(rows.values(), key=lambda r: (r.team, r.model)),
        nodes=nodes,
        timeline=timeline,
    )
