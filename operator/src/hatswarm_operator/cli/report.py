"""``hatswarm cost report``: showback for a window, by team and model, from Prometheus.

    hatswarm cost report --prometheus http://prometheus:9090 --from now-30d --to now \\
        -f examples/ --out report/

Writes ``report.md`` (tables, with the charts embedded), ``report.json``, and PNG charts:
``cost_by_team.png`` and ``cost_by_model.png`` (edge and cloud spend, cost per 1k) and
``requests.png`` (edge vs cloud requests per second over the window).

The edge cost is recomputed from the agents' own counters with the same model the operator
uses live (:mod:`cost`, :mod:`costing`): each scraped agent is a device whose cost over the
window (capex over its lifespan, management, connectivity, shared ops, and energy: measured
from ``hatswarm_npu_power_watts`` samples or ``hatswarm_model_energy_joules_total`` when the
agent reports them, else nameplate) is split over the models it ran by their share of its
NPU seconds (``hatswarm_model_compute_seconds_total``). A device that ran nothing is idle
cost. The cloud side is what the agents recorded for their fallback requests. Cost inputs
and cloud price come from the pool manifest (``-f``), else the seed's example device; teams
come from the EdgeModels' ``costAttribution`` (``-f``), else from the operator's
``hatswarm_cost_usd_total`` labels, else "unassigned".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from hatswarm_operator.api.manifests import ManifestError, load
from hatswarm_operator.cli.common import parse
from hatswarm_operator.cli.incident import default_step
from hatswarm_operator.finops.attribution import PoolCostInputs, pool_cost_inputs
from hatswarm_operator.finops.metrics import Showback, showback_of
from hatswarm_operator.finops.promql import (
    DEFAULT_URL,
    Prometheus,
    PrometheusError,
    duration,
    iso,
    parse_duration,
    parse_window,
)
from hatswarm_operator.finops.tco import (
    SECONDS_PER_YEAR,
    ModelUsage,
    attribute_node_cost,
    node_window_cost,
    to_decimal,
)

UNASSIGNED = "unassigned"
IDLE = "(idle devices)"
_ZERO = Decimal(0)
_AGENT_SERIES = (
    '{__name__=~"hatswarm_models_loaded|hatswarm_route_requests_total|hatswarm_npu_power_watts'
    '|hatswarm_inference_request_success_total"}'
)


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

    @property
    def total_usd(self) -> Decimal:
        return self.edge_usd + self.cloud_usd

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
class Report:
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

    def teams(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for m in self.models:
            t = rows.setdefault(
                m.team,
                {"team": m.team, "models": [], "requests": 0, "cloud_requests": 0,
                 "edge_usd": _ZERO, "cloud_usd": _ZERO},
            )  # fmt: skip
            t["models"].append(m.model)
            t["requests"] += m.requests
            t["cloud_requests"] += m.cloud_requests
            t["edge_usd"] += m.edge_usd
            t["cloud_usd"] += m.cloud_usd
        out = sorted(rows.values(), key=lambda r: (-(r["edge_usd"] + r["cloud_usd"]), r["team"]))
        if self.idle_usd > 0:
            out.append(
                {"team": IDLE, "models": [], "requests": 0, "cloud_requests": 0,
                 "edge_usd": self.idle_usd, "cloud_usd": _ZERO}
            )  # fmt: skip
        for r in out:
            n = r["requests"] + r["cloud_requests"]
            total = r["edge_usd"] + r["cloud_usd"]
            r["per_1k_usd"] = total * 1000 / n if n else None
        return out


# --------------------------------------------------------------------------------- collect


def _labels_from_operator(prom: Prometheus, end: float, window: float) -> dict[str, Showback]:
    out: dict[str, Showback] = {}
    expr = (
        "group by (model, team, customer, product_line) "
        f"(last_over_time(hatswarm_cost_usd_total[{duration(window)}]))"
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
) -> Report:
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

    for (name,), n in prom.increase(
        "hatswarm_inference_request_success_total", start, end, ("model",)
    ).items():
        row(name).requests += round(n)
    for (name,), n in prom.increase(
        "hatswarm_inference_request_failure_total", start, end, ("model",)
    ).items():
        if name and round(n):
            row(name).requests += round(n)
            row(name).failed += round(n)
    for (name,), n in prom.increase(
        "hatswarm_cloud_fallback_requests_total", start, end, ("model",)
    ).items():
        if round(n):
            row(name).cloud_requests += round(n)
    recorded_cloud = prom.increase("hatswarm_cloud_fallback_cost_usd_total", start, end, ("model",))
    for (name,), usd in recorded_cloud.items():
        if usd:
            row(name).cloud_usd += to_decimal(usd)
    if inputs.cloud_usd_per_1k is not None:
        for r in rows.values():  # agents that did not price their fallback: the list price
            if r.cloud_requests and not r.cloud_usd:
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
    compute = prom.increase(
        "hatswarm_model_compute_seconds_total", start, end, ("instance", "model")
    )
    inferences = prom.increase("hatswarm_inference_count_total", start, end, ("instance", "model"))
    joules = prom.increase("hatswarm_model_energy_joules_total", start, end, ("instance",))
    power: dict[str, list[tuple[float, float]]] = {}
    for s in prom.query(f"hatswarm_npu_power_watts[{duration(window)}]", at=end):
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
        ("edge", f"sum(rate(hatswarm_inference_request_success_total[{duration(rw)}]))"),
        ("cloud", f"sum(rate(hatswarm_cloud_fallback_requests_total[{duration(rw)}]))"),
    ):
        for s in prom.query_range(expr, start, end, step):
            timeline[key] = [(t, v) for t, v in s.points if math.isfinite(v)]
    return Report(
        start=start,
        end=end,
        inputs_from=inputs_from,
        models=sorted(rows.values(), key=lambda r: (r.team, r.model)),
        nodes=nodes,
        timeline=timeline,
    )


# ---------------------------------------------------------------------------------- output


def _usd(value: Decimal | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${float(value):.4g}" if abs(value) >= Decimal("0.0001") else f"${float(value):.3e}"


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def to_json(report: Report) -> dict[str, Any]:
    return {
        "from": iso(report.start),
        "to": iso(report.end),
        "window_seconds": round(report.end - report.start, 3),
        "cost_inputs": report.inputs_from,
        "edge_usd": _f(report.edge_usd),
        "idle_usd": _f(report.idle_usd),
        "cloud_usd": _f(report.cloud_usd),
        "models": [
            {
                "model": m.model,
                "team": m.team,
                "customer": m.customer,
                "product_line": m.product_line,
                "requests": m.requests,
                "failed": m.failed,
                "inferences": m.inferences,
                "compute_seconds": _f(m.compute_seconds),
                "edge_usd": _f(m.edge_usd),
                "cloud_requests": m.cloud_requests,
                "cloud_usd": _f(m.cloud_usd),
                "edge_per_1k_usd": _f(m.edge_per_1k),
                "cloud_per_1k_usd": _f(m.cloud_per_1k),
                "per_1k_usd": _f(m.per_1k),
            }
            for m in report.models
        ],
        "teams": [
            {
                **t,
                "edge_usd": _f(t["edge_usd"]),
                "cloud_usd": _f(t["cloud_usd"]),
                "per_1k_usd": _f(t["per_1k_usd"]),
            }
            for t in report.teams()
        ],
        "nodes": [
            {
                "instance": n.instance,
                "usd": _f(n.usd),
                "idle_usd": _f(n.idle_usd),
                "energy_source": n.energy_source,
                "energy_joules": _f(n.energy_joules),
            }
            for n in report.nodes
        ],
    }


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 7200:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def to_markdown(report: Report, charts: Sequence[str]) -> str:
    window = report.end - report.start
    lines = [
        "# hatswarm cost report",
        "",
        f"{iso(report.start)} to {iso(report.end)} ({_span(window)}). "
        f"Edge {_usd(report.edge_usd)} (of which idle {_usd(report.idle_usd)}), "
        f"cloud fallback {_usd(report.cloud_usd)}. Cost inputs: {report.inputs_from}.",
        "",
        "Edge cost is split over models by their share of each device's NPU seconds, not by "
        "request count.",
        "",
        "## By team",
        "",
        "| team | models | requests | cloud requests | edge | cloud | total | per 1k |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in report.teams():
        lines.append(
            f"| {t['team']} | {', '.join(t['models']) or '-'} | {t['requests']} | "
            f"{t['cloud_requests']} | {_usd(t['edge_usd'])} | {_usd(t['cloud_usd'])} | "
            f"{_usd(t['edge_usd'] + t['cloud_usd'])} | {_usd(t['per_1k_usd'])} |"
        )
    lines += [
        "",
        "## By model",
        "",
        "| model | team | requests | failed | NPU s | edge | edge per 1k | cloud requests "
        "| cloud | cloud per 1k | per 1k |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report.models:
        lines.append(
            f"| {m.model} | {m.team} | {m.requests} | {m.failed} | {m.compute_seconds:.3f} | "
            f"{_usd(m.edge_usd)} | {_usd(m.edge_per_1k)} | {m.cloud_requests} | "
            f"{_usd(m.cloud_usd)} | {_usd(m.cloud_per_1k)} | {_usd(m.per_1k)} |"
        )
    lines += [
        "",
        "## Devices",
        "",
        "| device | cost | idle | energy |",
        "|---|---:|---:|---|",
    ]
    for n in report.nodes:
        lines.append(
            f"| {n.instance} | {_usd(n.usd)} | {_usd(n.idle_usd)} | "
            f"{n.energy_source}, {n.energy_joules:.1f} J |"
        )
    if charts:
        lines += ["", "## Charts", ""]
        lines += [f"![{Path(c).stem}]({c})" for c in charts]
    return "\n".join(lines) + "\n"


def _plain(text: str) -> str:
    """Text for matplotlib without mathtext: '$' pairs would typeset as math."""
    return text.replace("$", r"\$")


def _grouped(
    ax: Any,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float]]],
    notes: Sequence[str],
    xlabel: str,
    title: str,
) -> None:
    """Horizontal grouped bars, one group per label; log scale when the values span more than
    two orders of magnitude (edge cents next to cloud dollars would otherwise vanish)."""
    positive = [v for _, _, values in series for v in values if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 100
    height = 0.8 / max(len(series), 1)
    for i, (name, color, values) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * height
        ax.barh(
            [y + offset for y in range(len(labels))],
            [v if v > 0 or not log else float("nan") for v in values],
            height=height, color=color, label=name,
        )  # fmt: skip
    for y, note in enumerate(notes):
        peak = max((values[y] for _, _, values in series), default=0.0)
        ax.annotate(_plain(note), (peak if peak > 0 else (min(positive) if log and positive else 0), y),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    ax.set_yticks(range(len(labels)), [_plain(x) for x in labels])
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 3, max(positive) * 300)
    else:
        ax.margins(x=0.4)
    ax.set_xlabel(xlabel + (" (log scale)" if log else ""))
    ax.set_title(title)
    ax.grid(True, axis="x", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def _charts(report: Report, out: Path) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written: list[str] = []
    edge_color, cloud_color = "tab:blue", "tab:red"
    span = f"{iso(report.start)} to {iso(report.end)}"

    teams = report.teams()
    fig = Figure(figsize=(9, 1.6 + 0.7 * max(len(teams), 1)), dpi=110)
    FigureCanvasAgg(fig)
    _grouped(
        fig.add_subplot(),
        [t["team"] for t in teams],
        [
            ("edge (by NPU seconds)", edge_color, [float(t["edge_usd"]) for t in teams]),
            ("cloud fallback", cloud_color, [float(t["cloud_usd"]) for t in teams]),
        ],
        [
            f"{_usd(t['edge_usd'] + t['cloud_usd'])}"
            + ("" if t["per_1k_usd"] is None else f", {_usd(t['per_1k_usd'])}/1k")
            + f", {t['requests']} + {t['cloud_requests']} cloud req"
            for t in teams
        ],
        "USD over the window",
        f"Cost by team, {span}",
    )
    fig.tight_layout()
    fig.savefig(out / "cost_by_team.png")
    written.append("cost_by_team.png")

    models = report.models
    fig = Figure(figsize=(13, 1.8 + 0.7 * max(len(models), 1)), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    labels = [f"{m.model} ({m.team})" for m in models]
    _grouped(
        left,
        labels,
        [
            ("edge", edge_color, [float(m.edge_usd) for m in models]),
            ("cloud fallback", cloud_color, [float(m.cloud_usd) for m in models]),
        ],
        [_usd(m.total_usd) for m in models],
        "USD over the window",
        "Spend by model",
    )
    _grouped(
        right,
        labels,
        [
            ("edge", edge_color, [float(m.edge_per_1k or 0) for m in models]),
            ("cloud", cloud_color, [float(m.cloud_per_1k or 0) for m in models]),
        ],
        [
            f"{m.requests} req ({_usd(m.edge_per_1k)}/1k), {m.cloud_requests} to cloud"
            + ("" if m.cloud_per_1k is None else f" ({_usd(m.cloud_per_1k)}/1k)")
            for m in models
        ],
        "USD per 1k inferences",
        "Cost per 1k: edge vs cloud",
    )
    fig.suptitle(f"Cost by model, {span}")
    fig.tight_layout()
    fig.savefig(out / "cost_by_model.png")
    written.append("cost_by_model.png")

    if report.timeline:
        fig = Figure(figsize=(9, 4), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for key, color in (("edge", edge_color), ("cloud", cloud_color)):
            pts = report.timeline.get(key, [])
            if pts:
                ax.plot([t - report.start for t, _ in pts], [v for _, v in pts], color=color,
                        marker="." if len(pts) < 30 else None, label=f"{key} requests/s")  # fmt: skip
        ax.set_xlabel(f"seconds since {iso(report.start)}")
        ax.set_ylabel("requests/s")
        ax.set_title("Requests: edge vs cloud fallback")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "requests.png")
        written.append("requests.png")
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hatswarm cost report",
        description="Showback by team and model for a window: Markdown, JSON and PNG charts.",
    )
    p.add_argument("--prometheus", default=DEFAULT_URL, metavar="URL",
                   help=f"Prometheus base URL (default {DEFAULT_URL})")  # fmt: skip
    p.add_argument("--from", dest="start", required=True, metavar="T1",
                   help="start: now-30d, unix seconds or RFC 3339")  # fmt: skip
    p.add_argument("--to", dest="end", default="now", metavar="T2", help="end (default now)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write")
    p.add_argument("-f", "--file", action="append", default=[], metavar="PATH",
                   help="manifests: the pool's cost inputs and the models' teams")  # fmt: skip
    p.add_argument("--pool", help="the InferencePool whose cost inputs apply (several in -f)")
    p.add_argument("--step", metavar="DURATION", help="timeline resolution")
    p.add_argument("--no-charts", action="store_true", help="Markdown and JSON only")
    return p


def _inputs(args: argparse.Namespace) -> tuple[PoolCostInputs, dict[str, Showback], str]:
    if not args.file:
        return PoolCostInputs(), {}, "the seed's example device (no -f manifests)"
    manifests = load(args.file)
    pools = [p for p in manifests.pools if not args.pool or p.metadata.name == args.pool]
    if len(pools) > 1:
        raise ValueError("several pools in -f: choose one with --pool")
    models = manifests.models
    if pools:
        models = [m for m in models if m.spec.pool == pools[0].metadata.name]
        return pool_cost_inputs(pools[0]), showback_of(models), f"pool {pools[0].metadata.name}"
    return PoolCostInputs(), showback_of(models), "the seed's example device (no pool in -f)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        start, end = parse_window(args.start, args.end)
        step = parse_duration(args.step) if args.step else None
        inputs, showback, source = _inputs(args)
    except (ValueError, ManifestError) as exc:
        print(f"hatswarm cost report: error: {exc}", file=sys.stderr)
        return 2
    try:
        with Prometheus(args.prometheus) as prom:
            report = collect(
                prom, start, end, inputs=inputs, showback=showback, inputs_from=source, step=step
            )
    except PrometheusError as exc:
        print(f"hatswarm cost report: {exc}", file=sys.stderr)
        return 1
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        charts: list[str] = []
        if not args.no_charts:
            try:
                charts = _charts(report, out)
            except ImportError:
                print(
                    "hatswarm cost report: charts need matplotlib: "
                    "pip install 'hatswarm-operator[plot]' (writing tables only)",
                    file=sys.stderr,
                )
        (out / "report.md").write_text(to_markdown(report, charts), encoding="utf-8")
        (out / "report.json").write_text(json.dumps(to_json(report), indent=2), encoding="utf-8")
    except OSError as exc:
        print(f"hatswarm cost report: cannot write {out}: {exc}", file=sys.stderr)
        return 1
    print(f"report written to {out / 'report.md'} ({', '.join(['report.json', *charts])})")
    return 0
