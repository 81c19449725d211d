"""A postmortem's FinOps reconciliation for a window, from Prometheus (`hatswarm cost incident`).

What the incident cost and what users saw: requests served, failed (by reason) and shed per
model; cloud-fallback requests and the spend the agents recorded, reconciled against the
pool's list price (``cloudFallback.pricePer1kUsd``) when known; minutes each model spent over
its p99 SLO (``histogram_quantile`` over the agents' request-duration histogram, one point per
step); and the nodes whose scrape target was down (``up == 0``), with for how long. Counts are
exact over windows up to six hours (from raw samples, resets handled; PromQL ``increase()``
extrapolates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hatswarm_operator.finops import series
from hatswarm_operator.finops.promql import Prometheus, duration, iso

DEFAULT_SLO_MS = 200.0
"""EdgeModel's default ``spec.slo.p99LatencyMs``."""


@dataclass
class ModelIncident:
    model: str
    served: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    shed: int = 0
    cloud_requests: int = 0
    cloud_usd: float = 0.0
    slo_ms: float = DEFAULT_SLO_MS
    minutes_over_slo: float = 0.0
    peak_p99_ms: float | None = None


@dataclass
class NodeDown:
    instance: str
    job: str
    minutes_down: float
    first_down: str


@dataclass
class Incident:
    start: float
    end: float
    step_seconds: float
    quantile: float
    models: list[ModelIncident]
    nodes_down: list[NodeDown]
    cloud_requests: int
    cloud_usd_recorded: float
    cloud_usd_at_list_price: float | None
    cloud_price_per_1k_usd: float | None

    @property
    def failed(self) -> int:
        return sum(m.failed for m in self.models)

    @property
    def shed(self) -> int:
        return sum(m.shed for m in self.models)

    @property
    def served(self) -> int:
        return sum(m.served for m in self.models)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": iso(self.start),
            "to": iso(self.end),
            "window_seconds": round(self.end - self.start, 3),
            "step_seconds": self.step_seconds,
            "quantile": self.quantile,
            "served": self.served,
            "failed": self.failed,
            "shed": self.shed,
            "cloud_fallback_requests": self.cloud_requests,
            "cloud_fallback_spend_usd": round(self.cloud_usd_recorded, 6),
            "cloud_fallback_spend_at_list_price_usd": (
                None
                if self.cloud_usd_at_list_price is None
                else round(self.cloud_usd_at_list_price, 6)
            ),
            "cloud_price_per_1k_usd": self.cloud_price_per_1k_usd,
            "minutes_over_slo": round(sum(m.minutes_over_slo for m in self.models), 3),
            "models": [asdict(m) for m in self.models],
            "nodes_down": [asdict(n) for n in self.nodes_down],
        }


def _int(x: float) -> int:
    return round(x)


def collect(
    prom: Prometheus,
    start: float,
    end: float,
    *,
    step: float,
    rate_window: float,
    quantile: float = 0.99,
    slo_ms: Mapping[str, float] | None = None,
    default_slo_ms: float = DEFAULT_SLO_MS,
    job: str | None = None,
    cloud_price_per_1k: float | None = None,
) -> Incident:
    """Query everything the report needs for [start, end]."""
    models: dict[str, ModelIncident] = {}
    slos = dict(slo_ms or {})

    def model(name: str) -> ModelIncident:
        if name not in models:
            models[name] = ModelIncident(name, slo_ms=slos.get(name, default_slo_ms))
        return models[name]

    for (name,), n in prom.increase(series.REQUEST_SUCCESS, start, end, ("model",)).items():
        model(name).served += _int(n)
    for (name, reason), n in prom.increase(
        series.REQUEST_FAILURE, start, end, ("model", "reason")
    ).items():
        if _int(n):
            m = model(name or "(unknown model)")
            m.failed += _int(n)
            m.failed_by_reason[reason] = m.failed_by_reason.get(reason, 0) + _int(n)
    for (name,), n in prom.increase(series.REQUESTS_SHED, start, end, ("model",)).items():
        if _int(n):
            model(name).shed += _int(n)
    for (name,), n in prom.increase(series.CLOUD_REQUESTS, start, end, ("model",)).items():
        if _int(n):
            model(name).cloud_requests += _int(n)
    for (name,), usd in prom.increase(series.CLOUD_COST, start, end, ("model",)).items():
        if usd:
            model(name).cloud_usd += usd

    # p99 per model over time, one point per step; NaN (no traffic) is not "over".
    expr = (
        f"histogram_quantile({quantile}, sum by (le, model) "
        f"(rate({series.bucket(series.REQUEST_DURATION)}[{duration(rate_window)}])))"
    )
    # Align the points on `end`: the window's last moment is always evaluated (a burst scraped
    # just before `end` must not fall between the last point and `end`).
    first = end - math.floor((end - start) / step) * step
    for line in prom.query_range(expr, first, end, step):
        name = line.labels.get("model", "")
        if not name:
            continue
        finite = [v for _, v in line.points if math.isfinite(v)]
        if not finite:
            continue
        m = model(name)
        limit = m.slo_ms / 1000
        over = sum(1 for v in finite if v > limit)
        m.minutes_over_slo = round(over * step / 60, 3)
        m.peak_p99_ms = round(max(finite) * 1000, 3)

    selector = f'up{{job="{job}"}}' if job else "up"
    down: list[NodeDown] = []
    for line in prom.query_range(selector, start, end, step):
        zeros = [t for t, v in line.points if v == 0]
        if zeros:
            down.append(
                NodeDown(
                    instance=line.labels.get("instance", "?"),
                    job=line.labels.get("job", ""),
                    minutes_down=round(len(zeros) * step / 60, 3),
                    first_down=iso(zeros[0]),
                )
            )

    cloud_requests = sum(m.cloud_requests for m in models.values())
    return Incident(
        start=start,
        end=end,
        step_seconds=step,
        quantile=quantile,
        models=sorted(models.values(), key=lambda m: m.model),
        nodes_down=sorted(down, key=lambda n: n.instance),
        cloud_requests=cloud_requests,
        cloud_usd_recorded=sum(m.cloud_usd for m in models.values()),
        cloud_usd_at_list_price=(
            None if cloud_price_per_1k is None else cloud_requests * cloud_price_per_1k / 1000
        ),
        cloud_price_per_1k_usd=cloud_price_per_1k,
    )
