"""FinOps charts as PNG files: cost against volume (`hatswarm cost --plot`) and the showback
report's spend by team and model (`hatswarm cost report`).

matplotlib is optional (`hatswarm-operator[plot]`): it is imported inside each function, so
an ImportError reaches the caller, which says what to install.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from hatswarm_operator.finops.money import usd_auto
from hatswarm_operator.finops.promql import iso
from hatswarm_operator.finops.showback import ShowbackReport
from hatswarm_operator.finops.tco import DAYS_PER_YEAR


def cost_vs_volume(
    path: Path,
    *,
    devices: int,
    per_device_year_usd: Decimal,
    per_device_day: Decimal,
    cloud_per_inference_usd: Decimal | None = None,
    break_even_per_device_day: Decimal | None = None,
    cloud_share: Decimal | None = None,
    tokens: bool = False,
) -> None:
    """Cost per inference against daily volume per device, edge vs cloud, log-log
    (`hatswarm cost --plot`). With `tokens`, volumes are tokens and costs per 1M tokens
    (`per_device_day`, `cloud_per_inference_usd` and `break_even_per_device_day` in those
    units)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_device_year = float(per_device_year_usd)
    current = float(per_device_day)
    cloud = None if cloud_per_inference_usd is None else float(cloud_per_inference_usd)
    break_even = None if break_even_per_device_day is None else float(break_even_per_device_day)
    anchors = [current] + ([break_even] if break_even else [])
    low, high = min(anchors) / 30, max(anchors) * 30
    steps = 200
    xs = [low * (high / low) ** (i / steps) for i in range(steps + 1)]
    days = float(DAYS_PER_YEAR) / (1e6 if tokens else 1.0)  # per 1M tokens
    unit = "token" if tokens else "inference"
    per = "1M tokens" if tokens else "inference"

    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(xs, [per_device_year / (days * x) for x in xs], label="edge (Pi 5 + AI HAT+)", lw=2)
    if cloud is not None:
        ax.axhline(cloud, color="tab:red", lw=2, label="cloud")
        if cloud_share is not None:
            share = float(cloud_share)
            ax.plot(
                xs,
                [per_device_year / (days * x) + share * cloud for x in xs],
                ls="--",
                color="tab:purple",
                label=f"edge + {share:.0%} cloud fallback",
            )
    if break_even is not None and cloud is not None:
        ax.plot([break_even], [cloud], "ko", zorder=5)
        ax.axvline(break_even, color="k", ls=":", lw=1)
        ax.annotate(
            f"break-even\n{break_even:,.0f} {unit}s/device/day",
            (break_even, cloud),
            textcoords="offset points",
            xytext=(10, 12),
        )
    ax.plot(
        [current], [per_device_year / (days * current)], "s", color="tab:green", zorder=5,
        label=f"this volume: {current:,.0f} {unit}s/day",
    )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{unit}s per device per day")
    ax.set_ylabel(f"USD per {per}")
    n = devices
    ax.set_title(
        f"Cost per {per}, {n} device{'s' if n != 1 else ''}, "
        f"${per_device_year:,.2f} per device-year"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


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


def showback_charts(report: ShowbackReport, out: Path) -> list[str]:
    """cost_by_team.png, cost_by_model.png, (with generative models) tokens_by_model.png and
    (with a timeline) requests.png in `out`."""
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
            f"{usd_auto(t['edge_usd'] + t['cloud_usd'])}"
            + ("" if t["per_1k_usd"] is None else f", {usd_auto(t['per_1k_usd'])}/1k")
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
        [usd_auto(m.total_usd) for m in models],
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
            f"{m.requests} req ({usd_auto(m.edge_per_1k)}/1k), {m.cloud_requests} to cloud"
            + ("" if m.cloud_per_1k is None else f" ({usd_auto(m.cloud_per_1k)}/1k)")
            for m in models
        ],
        "USD per 1k inferences",
        "Cost per 1k: edge vs cloud",
    )
    fig.suptitle(f"Cost by model, {span}")
    fig.tight_layout()
    fig.savefig(out / "cost_by_model.png")
    written.append("cost_by_model.png")

    generative = [m for m in models if m.edge_tokens or m.cloud_tokens]
    if generative:
        fig = Figure(figsize=(13, 1.8 + 0.7 * len(generative)), dpi=110)
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2)
        labels = [f"{m.model} ({m.team})" for m in generative]
        _grouped(
            left,
            labels,
            [
                ("edge", edge_color, [float(m.edge_tokens) for m in generative]),
                ("cloud", cloud_color, [float(m.cloud_tokens) for m in generative]),
            ],
            [f"{m.edge_tokens:,} + {m.cloud_tokens:,} cloud" for m in generative],
            "tokens (prompt + completion) over the window",
            "Tokens by model",
        )
        _grouped(
            right,
            labels,
            [
                ("edge", edge_color, [float(m.edge_per_1m_tokens or 0) for m in generative]),
                ("cloud", cloud_color, [float(m.cloud_per_1m_tokens or 0) for m in generative]),
            ],
            [
                f"edge {usd_auto(m.edge_per_1m_tokens)}, cloud {usd_auto(m.cloud_per_1m_tokens)}"
                for m in generative
            ],
            "USD per 1M tokens",
            "Cost per 1M tokens: edge vs cloud",
        )
        fig.suptitle(f"Tokens by model, {span}")
        fig.tight_layout()
        fig.savefig(out / "tokens_by_model.png")
        written.append("tokens_by_model.png")

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
