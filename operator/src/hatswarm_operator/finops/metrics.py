"""Prometheus series for live Edge FinOps, from :mod:`attribution` (the operator exports them).

- `hatswarm_cost_per_inference_usd{pool,model,team,customer,product_line}`: a model's attributed
  cost per inference since the operator started (by NPU seconds, not requests)
- `hatswarm_cost_usd_total{...same labels}`: the spend attributed to the model, a counter, so a
  team's bill is one PromQL sum away:
  `sum by (team) (increase(hatswarm_cost_usd_total[30d]))`
- `hatswarm_device_cost_usd_per_year{pool}`: one device-year with its share of shared ops
  (energy measured when the pool's status says so)

The cloud fallback's spend is counted once, at its source: the agents'
`hatswarm_cloud_fallback_cost_usd_total` (per node and model, priced by the routing table); the
pool's running total is in InferencePool `status.cost.cloudFallbackSpendUsd`.

Showback labels come from each EdgeModel's `spec.costAttribution` (empty when unset). The
`_total` series are counters rather than gauges so that `increase()` stays right across
operator restarts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

from hatswarm_operator.finops.attribution import LiveCost

if TYPE_CHECKING:
    from hatswarm_operator.api import EdgeModel

METRIC_NAMES: list[str] = [
    "hatswarm_cost_per_inference_usd",
    "hatswarm_cost_usd_total",
    "hatswarm_device_cost_usd_per_year",
]

MODEL_LABELS = ("pool", "model", "team", "customer", "product_line")


@dataclass(frozen=True)
class Showback:
    """A model's showback labels (``EdgeModel.spec.costAttribution``)."""

    team: str = ""
    customer: str = ""
    product_line: str = ""


def showback_of(models: Iterable[EdgeModel]) -> dict[str, Showback]:
    """Model name -> its showback labels, from the EdgeModels' ``spec.costAttribution``."""
    out: dict[str, Showback] = {}
    for m in models:
        a = m.spec.cost_attribution
        out[m.metadata.name] = Showback(a.team or "", a.customer or "", a.product_line or "")
    return out


class CostMetrics:
    """The cost series in one registry; :meth:`publish` after each :func:`attribution.account`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.per_inference = Gauge(
            "hatswarm_cost_per_inference_usd",
            "Edge cost per inference attributed to the model by NPU seconds",
            MODEL_LABELS,
            registry=registry,
        )
        self.spend = Counter(
            "hatswarm_cost_usd",
            "Edge spend attributed to the model by its share of NPU seconds on each node",
            MODEL_LABELS,
            registry=registry,
        )
        self.device_year = Gauge(
            "hatswarm_device_cost_usd_per_year",
            "One device-year of the pool, with its share of shared ops",
            ("pool",),
            registry=registry,
        )
        self._labels: dict[tuple[str, str], tuple[str, ...]] = {}

    def publish(self, pool: str, live: LiveCost, showback: Mapping[str, Showback]) -> None:
        """Set the gauges and add this tick's spend to the counters."""
        self.device_year.labels(pool).set(float(live.per_device_year_usd))
        for name, m in live.models.items():
            tags = showback.get(name, Showback())
            labels = (pool, name, tags.team, tags.customer, tags.product_line)
            old = self._labels.get((pool, name))
            if old is not None and old != labels:
                self._remove(old)  # the model's showback labels changed
            self._labels[(pool, name)] = labels
            self.spend.labels(*labels).inc(float(m.window_usd))
            per = m.per_inference_usd
            if per is not None:
                self.per_inference.labels(*labels).set(float(per))

    def forget_model(self, pool: str, model: str) -> None:
        """Drop a deleted model's series."""
        labels = self._labels.pop((pool, model), None)
        if labels is not None:
            self._remove(labels)

    def forget_pool(self, pool: str) -> None:
        for p, model in [k for k in self._labels if k[0] == pool]:
            self.forget_model(p, model)
        with contextlib.suppress(KeyError):
            self.device_year.remove(pool)

    def _remove(self, labels: tuple[str, ...]) -> None:
        for family in (self.per_inference, self.spend):
            with contextlib.suppress(KeyError):
                family.remove(*labels)
