"""The FinOps reports as text: showback as Markdown and JSON, an incident as a table.

Collection is elsewhere (:mod:`showback`, :mod:`incident`); charts are in :mod:`charts`.
Money is formatted by :mod:`money`, so every report spells a dollar the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hatswarm_operator.finops.incident import Incident
from hatswarm_operator.finops.money import significant, usd_auto
from hatswarm_operator.finops.promql import iso
from hatswarm_operator.finops.showback import ShowbackReport

# --- showback ----------------------------------------------------------------------------------


def showback_json(report: ShowbackReport) -> dict[str, Any]:
    return {
        "from": iso(report.start),
        "to": iso(report.end),
        "window_seconds": round(report.end - report.start, 3),
        "cost_inputs": report.inputs_from,
        "edge_usd": significant(report.edge_usd),
        "idle_usd": significant(report.idle_usd),
        "cloud_usd": significant(report.cloud_usd),
        "models": [
            {
                "model": m.model,
                "team": m.team,
                "customer": m.customer,
                "product_line": m.product_line,
                "requests": m.requests,
                "failed": m.failed,
                "inferences": m.inferences,
                "compute_seconds": significant(m.compute_seconds),
                "edge_usd": significant(m.edge_usd),
                "cloud_requests": m.cloud_requests,
                "cloud_usd": significant(m.cloud_usd),
                "edge_per_1k_usd": significant(m.edge_per_1k),
                "cloud_per_1k_usd": significant(m.cloud_per_1k),
                "per_1k_usd": significant(m.per_1k),
                "edge_prompt_tokens": m.edge_prompt_tokens,
                "edge_completion_tokens": m.edge_completion_tokens,
                "cloud_prompt_tokens": m.cloud_prompt_tokens,
                "cloud_completion_tokens": m.cloud_completion_tokens,
                "edge_per_1m_tokens_usd": significant(m.edge_per_1m_tokens),
                "cloud_per_1m_tokens_usd": significant(m.cloud_per_1m_tokens),
            }
            for m in report.models
        ],
        "teams": [
            {
                **t,
                "edge_usd": significant(t["edge_usd"]),
                "cloud_usd": significant(t["cloud_usd"]),
                "per_1k_usd": significant(t["per_1k_usd"]),
                "per_1m_tokens_usd": significant(t["per_1m_tokens_usd"]),
            }
            for t in report.teams()
        ],
        "nodes": [
            {
                "instance": n.instance,
                "usd": significant(n.usd),
                "idle_usd": significant(n.idle_usd),
                "energy_source": n.energy_source,
                "energy_joules": significant(n.energy_joules),
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


def _token_tables(report: ShowbackReport) -> list[str]:
    """Showback in tokens: generative models' volume and cost per 1M tokens, edge and cloud."""
    lines = [
        "",
        "## Tokens by team",
        "",
        "| team | edge tokens | cloud tokens | cost | per 1M tokens |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in report.teams():
        if t["edge_tokens"] or t["cloud_tokens"]:
            lines.append(
                f"| {t['team']} | {t['edge_tokens']:,} | {t['cloud_tokens']:,} | "
                f"{usd_auto(t['edge_usd'] + t['cloud_usd'])} | "
                f"{usd_auto(t['per_1m_tokens_usd'])} |"
            )
    lines += [
        "",
        "## Tokens by model",
        "",
        "| model | team | edge prompt | edge completion | edge per 1M | cloud prompt "
        "| cloud completion | cloud per 1M |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report.models:
        if m.edge_tokens or m.cloud_tokens:
            lines.append(
                f"| {m.model} | {m.team} | {m.edge_prompt_tokens:,} | "
                f"{m.edge_completion_tokens:,} | {usd_auto(m.edge_per_1m_tokens)} | "
                f"{m.cloud_prompt_tokens:,} | {m.cloud_completion_tokens:,} | "
                f"{usd_auto(m.cloud_per_1m_tokens)} |"
            )
    return lines


def showback_markdown(report: ShowbackReport, charts: Sequence[str]) -> str:
    window = report.end - report.start
    lines = [
        "# hatswarm cost report",
        "",
        f"{iso(report.start)} to {iso(report.end)} ({_span(window)}). "
        f"Edge {usd_auto(report.edge_usd)} (of which idle {usd_auto(report.idle_usd)}), "
        f"cloud fallback {usd_auto(report.cloud_usd)}. Cost inputs: {report.inputs_from}.",
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
            f"{t['cloud_requests']} | {usd_auto(t['edge_usd'])} | {usd_auto(t['cloud_usd'])} | "
            f"{usd_auto(t['edge_usd'] + t['cloud_usd'])} | {usd_auto(t['per_1k_usd'])} |"
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
            f"{usd_auto(m.edge_usd)} | {usd_auto(m.edge_per_1k)} | {m.cloud_requests} | "
            f"{usd_auto(m.cloud_usd)} | {usd_auto(m.cloud_per_1k)} | {usd_auto(m.per_1k)} |"
        )
    if report.has_tokens:
        lines += _token_tables(report)
    lines += [
        "",
        "## Devices",
        "",
        "| device | cost | idle | energy |",
        "|---|---:|---:|---|",
    ]
    for n in report.nodes:
        lines.append(
            f"| {n.instance} | {usd_auto(n.usd)} | {usd_auto(n.idle_usd)} | "
            f"{n.energy_source}, {n.energy_joules:.1f} J |"
        )
    if charts:
        lines += ["", "## Charts", ""]
        lines += [f"![{Path(c).stem}]({c})" for c in charts]
    return "\n".join(lines) + "\n"


# --- incident -----------------------------------------------------------------------------------


def incident_table(incident: Incident) -> str:
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
