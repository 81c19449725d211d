"""``hatswarm cost incident``: a postmortem's FinOps reconciliation from Prometheus.

    hatswarm cost incident --from 2025-03-01T09:12:00Z --to 2025-03-01T10:05:00Z \\
        --prometheus http://prometheus:9090 -f examples/

For the window it reports what the incident cost and what users saw: requests served,
failed (by reason) and shed per model; cloud-fallback requests and the spend the agents
recorded, reconciled against the pool's list price (``cloudFallback.pricePer1kUsd``) when a
pool manifest is given; minutes each model spent over its p99 SLO (``histogram_quantile`` over
the agents' request-duration histogram, one point per ``--step``); and the nodes whose
scrape target was down (``up == 0``), with for how long. Counts are exact over windows up to
six hours (from raw samples, resets handled; PromQL ``increase()`` extrapolates).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hatswarm_operator.api.manifests import ManifestError, load
from hatswarm_operator.cli.common import parse
from hatswarm_operator.finops.promql import (
    DEFAULT_URL,
    Prometheus,
    PrometheusError,
    duration,
    iso,
    parse_duration,
    parse_window,
)

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

    for (name,), n in prom.increase(
        "hatswarm_inference_request_success_total", start, end, ("model",)
    ).items():
        model(name).served += _int(n)
    for (name, reason), n in prom.increase(
        "hatswarm_inference_request_failure_total", start, end, ("model", "reason")
    ).items():
        if _int(n):
            m = model(name or "(unknown model)")
            m.failed += _int(n)
            m.failed_by_reason[reason] = m.failed_by_reason.get(reason, 0) + _int(n)
    for (name,), n in prom.increase("hatswarm_requests_shed_total", start, end, ("model",)).items():
        if _int(n):
            model(name).shed += _int(n)
    for (name,), n in prom.increase(
        "hatswarm_cloud_fallback_requests_total", start, end, ("model",)
    ).items():
        if _int(n):
            model(name).cloud_requests += _int(n)
    for (name,), usd in prom.increase(
        "hatswarm_cloud_fallback_cost_usd_total", start, end, ("model",)
    ).items():
        if usd:
            model(name).cloud_usd += usd

    # p99 per model over time, one point per step; NaN (no traffic) is not "over".
    expr = (
        f"histogram_quantile({quantile}, sum by (le, model) "
        f"(rate(hatswarm_inference_request_duration_seconds_bucket[{duration(rate_window)}])))"
    )
    # Align the points on `end`: the window's last moment is always evaluated (a burst scraped
    # just before `end` must not fall between the last point and `end`).
    first = end - math.floor((end - start) / step) * step
    for series in prom.query_range(expr, first, end, step):
        name = series.labels.get("model", "")
        if not name:
            continue
        finite = [v for _, v in series.points if math.isfinite(v)]
        if not finite:
            continue
        m = model(name)
        limit = m.slo_ms / 1000
        over = sum(1 for v in finite if v > limit)
        m.minutes_over_slo = round(over * step / 60, 3)
        m.peak_p99_ms = round(max(finite) * 1000, 3)

    selector = f'up{{job="{job}"}}' if job else "up"
    down: list[NodeDown] = []
    for series in prom.query_range(selector, start, end, step):
        zeros = [t for t, v in series.points if v == 0]
        if zeros:
            down.append(
                NodeDown(
                    instance=series.labels.get("instance", "?"),
                    job=series.labels.get("job", ""),
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


def to_table(incident: Incident) -> str:
    window = incident.end - incident.start
    lines = [
        f"hatswarm cost incident: {iso(incident.start)} .. {iso(incident.end)} "
        f"({window / 60:.1f} min)",
        "",
        f"{'model':<24}{'served':>9}{'failed':>9}{'shed':>7}{'cloud':>8}{'p99 peak':>11}"
        f"{'SLO':>9}{'min over':>10}",
    ]
    for m in incident.models:
        peak = "-" if m.peak_p99_ms is None else f"{m.peak_p99_ms:.1f} ms"
        lines.append(
            f"{m.model:<24}{m.served:>9}{m.failed:>9}{m.shed:>7}{m.cloud_requests:>8}"
            f"{peak:>11}{m.slo_ms:>6.0f} ms{m.minutes_over_slo:>10.1f}"
        )
    lines.append(
        f"{'total':<24}{incident.served:>9}{incident.failed:>9}{incident.shed:>7}"
        f"{incident.cloud_requests:>8}"
    )
    reasons: dict[str, int] = {}
    for m in incident.models:
        for reason, n in m.failed_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + n
    if reasons:
        lines.append(
            "failures by reason: "
            + ", ".join(f"{r or 'unknown'} {n}" for r, n in sorted(reasons.items()))
        )
    lines.append("")
    spend = (
        f"cloud fallback: {incident.cloud_requests} requests, ${incident.cloud_usd_recorded:.4f}"
    )
    spend += " recorded by the agents"
    if incident.cloud_usd_at_list_price is not None:
        listed = incident.cloud_usd_at_list_price
        gap = incident.cloud_usd_recorded - listed
        verdict = "reconciled" if abs(gap) < 1e-9 + 1e-6 * listed else f"difference ${gap:+.4f}"
        spend += f"; ${listed:.4f} at the pool's ${incident.cloud_price_per_1k_usd}/1k ({verdict})"
    lines.append(spend)
    if incident.nodes_down:
        lines.append("nodes down:")
        lines += [
            f"  {n.instance} ({n.job}): {n.minutes_down:.1f} min, first seen down {n.first_down}"
            for n in incident.nodes_down
        ]
    else:
        lines.append("nodes down: none")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hatswarm cost incident",
        description="Postmortem with FinOps reconciliation: cloud-fallback spend, failed and "
        "shed requests, minutes over SLO and nodes down, from Prometheus.",
    )
    p.add_argument("--from", dest="start", required=True, metavar="T1",
                   help="start: now-1h, unix seconds or RFC 3339")  # fmt: skip
    p.add_argument("--to", dest="end", default="now", metavar="T2", help="end (default now)")
    p.add_argument("--prometheus", default=DEFAULT_URL, metavar="URL",
                   help=f"Prometheus base URL (default {DEFAULT_URL}; env HATSWARM_PROMETHEUS)")  # fmt: skip
    p.add_argument("-f", "--file", action="append", default=[], metavar="PATH",
                   help="manifests: EdgeModel SLOs and the pool's cloud price")  # fmt: skip
    p.add_argument("--slo-ms", type=float, metavar="MS",
                   help="p99 SLO for every model (default: the EdgeModels', else 200)")  # fmt: skip
    p.add_argument("--quantile", type=float, default=0.99)
    p.add_argument("--step", metavar="DURATION",
                   help="resolution of the SLO and up series (default: 1m, finer for short windows)")  # fmt: skip
    p.add_argument("--rate-window", default="1m", metavar="DURATION",
                   help="rate() window for the latency quantile (default 1m)")  # fmt: skip
    p.add_argument("--job", help="only this scrape job's `up` series")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def manifest_costs(paths: Sequence[str]) -> tuple[dict[str, float], float | None]:
    """EdgeModel p99 SLOs (ms) and the pool's cloud price per 1k, from manifests."""
    if not paths:
        return {}, None
    manifests = load(paths)
    slos = {m.metadata.name: m.spec.slo.p99_latency_ms for m in manifests.models}
    price = next(
        (p.spec.cloud_fallback.price_per1k_usd for p in manifests.pools if p.spec.cloud_fallback),
        None,
    )
    return slos, price


def default_step(window: float) -> float:
    """One point a minute, but at least ~60 points for windows under an hour (1 s floor)."""
    return 60.0 if window >= 3600 else max(1.0, round(window / 60, 3))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        start, end = parse_window(args.start, args.end)
        step = parse_duration(args.step) if args.step else default_step(end - start)
        rate_window = parse_duration(args.rate_window)
        if not 0 < args.quantile < 1:
            raise ValueError("--quantile must be within (0, 1)")
        slos, price = manifest_costs(args.file)
        if args.slo_ms:
            slos = {}  # one SLO for every model
    except (ValueError, ManifestError) as exc:
        print(f"hatswarm cost incident: error: {exc}", file=sys.stderr)
        return 2
    try:
        with Prometheus(args.prometheus) as prom:
            incident = collect(
                prom, start, end, step=step, rate_window=rate_window, quantile=args.quantile,
                slo_ms=slos, default_slo_ms=args.slo_ms or DEFAULT_SLO_MS, job=args.job,
                cloud_price_per_1k=price,
            )  # fmt: skip
    except PrometheusError as exc:
        print(f"hatswarm cost incident: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(incident.to_json(), indent=2))
    else:
        print(to_table(incident))
    return 0
