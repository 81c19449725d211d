"""``hatswarm cost incident``: a postmortem's FinOps reconciliation from Prometheus.

    hatswarm cost incident --from 2025-03-01T09:12:00Z --to 2025-03-01T10:05:00Z \\
        --prometheus http://prometheus:9090 -f examples/

What it reports and how: :mod:`hatswarm_operator.finops.incident`. EdgeModel SLOs and the
pool's cloud price come from the manifests (``-f``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hatswarm_operator.api.manifests import ManifestError, load
from hatswarm_operator.cli.common import (
    Parser,
    UsageError,
    add_output,
    emit,
    failures,
    run,
    usage_errors,
)
from hatswarm_operator.finops.incident import DEFAULT_SLO_MS, collect
from hatswarm_operator.finops.promql import (
    DEFAULT_URL,
    Prometheus,
    PrometheusError,
    default_step,
    parse_duration,
    parse_window,
)
from hatswarm_operator.finops.render import incident_table


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
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
    add_output(p)
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


def _command(args: argparse.Namespace) -> int:
    with usage_errors(ValueError, ManifestError):
        start, end = parse_window(args.start, args.end)
        step = parse_duration(args.step) if args.step else default_step(end - start)
        rate_window = parse_duration(args.rate_window)
        slos, price = manifest_costs(args.file)
    if not 0 < args.quantile < 1:
        raise UsageError("--quantile must be within (0, 1)")
    if args.slo_ms:
        slos = {}  # one SLO for every model
    with failures(PrometheusError), Prometheus(args.prometheus) as prom:
        incident = collect(
            prom, start, end, step=step, rate_window=rate_window, quantile=args.quantile,
            slo_ms=slos, default_slo_ms=args.slo_ms or DEFAULT_SLO_MS, job=args.job,
            cloud_price_per_1k=price,
        )  # fmt: skip
    emit(args.output, incident.to_json(), lambda: incident_table(incident))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, _command)
