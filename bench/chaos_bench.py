"""Chaos benchmark (issue #19): what clients see when the pool is broken on purpose.

The scenarios are tests/chaos's (tests/chaos/scenarios.py); the tests assert loss and status
with generous bounds, this reports the timings, each against the figure it must stay under:

- kills: two holders SIGKILLed one after the other under closed-loop load (8 clients), the
  second the moment the first one's replacement turned Ready; requests lost per round (5
  rounds; target 0 of >= 600 each).
- freeze: a holder SIGSTOPped for 4 s under load through an entry that routes to it and to a
  healthy replica; the worst request while it was frozen, against the pool's 5 s budget (the
  per-attempt timeout is max(250 ms, 4 x the peer's latency or the pool's p99)); seconds from
  SIGCONT to its first answer again.
- swap: a table removing a slow peer with requests in flight (alive, then frozen); the worst
  request around the swap against the budget.
- huge: one request of 8M empty BYTES strings (refused by the element limit) and one of 256k
  2-byte strings (served: the default limit); health-check latency from another process throughout (target
  < 100 ms), RSS after against before (target < 1.10); and, as the floor under the health
  figure, a bare grpc.aio server taking in the same 32 MB request.
- cloud: seconds from the cloud fallback's return after a 10 s outage to the first answer,
  against the 2 s reconnect back-off cap.

    uv run --frozen python bench/chaos_bench.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos.scenarios import (  # noqa: E402
    bare_grpc_floor,
    cloud_recovery,
    frozen_peer,
    huge_bytes,
    summary_figures,
    table_swap,
    two_holders_killed,
)
from tests.onnxmodels import build_identity, build_strings  # noqa: E402

BUDGET_S = 5.0
HEALTH_TARGET_MS = 100.0


def _kills(rounds: int) -> dict[str, Any]:
    out = []
    for i in range(rounds):
        state = Path(tempfile.mkdtemp(prefix="hatswarm-chaos-kill-"))
        r = asyncio.run(two_holders_killed(state))
        out.append(
            {**summary_figures(r.summary), "replaced_s": [round(s, 2) for s in r.replaced_s]}
        )
        print(f"  kills round {i + 1}: lost {r.lost} of {r.summary.sent}", flush=True)
    return {
        "rounds": out,
        "lost_total": sum(r["failed"] for r in out),
        "sent_total": sum(r["sent"] for r in out),
        "lost_in_a_row_rounds_with_zero": sum(1 for r in out if r["failed"] == 0),
    }


def _freeze(model: Path) -> dict[str, Any]:
    r = frozen_peer(model)
    worst = r.worst_during_freeze_s()
    print(f"  freeze: worst {worst * 1000:.0f} ms, rejoined {r.rejoined_s}", flush=True)
    return {
        **summary_figures(r.summary),
        "worst_during_freeze_ms": round(worst * 1000, 1),
        "rejoined_s": None if r.rejoined_s is None else round(r.rejoined_s, 2),
    }


def _swap(model: Path, frozen: bool) -> dict[str, Any]:
    r = table_swap(model, frozen=frozen)
    around = [o for o in r.summary.outcomes if o.started < r.swapped_at + 1]
    worst = max((o.seconds for o in around), default=0.0)
    print(f"  swap ({'frozen' if frozen else 'alive'}): worst {worst:.2f} s", flush=True)
    return {**summary_figures(r.summary), "worst_around_swap_s": round(worst, 3)}


def _huge(model: Path, count: int, item: bytes) -> dict[str, Any]:
    r = huge_bytes(model, count, item)
    print(f"  huge {count}: {r.code} in {r.seconds:.2f} s, health worst {r.health_worst_ms:.0f} ms, "
          f"rss {r.rss_before >> 20} -> {r.rss_after >> 20} MB", flush=True)  # fmt: skip
    return {
        "elements": count,
        "code": r.code,
        "seconds": round(r.seconds, 3),
        "health_worst_ms": round(r.health_worst_ms, 1),
        "health_checks": r.health_checks,
        "rss_before_mb": round(r.rss_before / 2**20, 1),
        "rss_peak_mb": round(r.rss_peak / 2**20, 1),
        "rss_after_mb": round(r.rss_after / 2**20, 1),
        "rss_after_vs_before": round(r.rss_after_vs_before, 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="hatswarm-chaos-"))
    ident = build_identity(folder / "ident.onnx")
    strings = build_strings(folder / "strings.onnx")
    kills = _kills(1 if quick else 5)
    freeze = _freeze(ident)
    swap = {"alive": _swap(ident, False), "frozen": _swap(ident, True)}
    refused = _huge(strings, 8 << 20, b"")
    served = _huge(strings, 1 << 18, b"ab")
    bare_ms = bare_grpc_floor(8 << 20)
    refused["bare_grpc_aio_health_worst_ms"] = round(bare_ms, 1)
    print(f"  bare grpc.aio server taking in the same request: health worst {bare_ms:.0f} ms",
          flush=True)  # fmt: skip
    cloud = cloud_recovery(ident)
    print(f"  cloud: back {cloud['recovered_s']:.2f} s after the outage", flush=True)
    worst_swap = max(swap["alive"]["worst_around_swap_s"], swap["frozen"]["worst_around_swap_s"])
    return {
        "name": "chaos",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "kills": kills,
        "freeze": freeze,
        "swap": swap,
        "huge": {"refused_8m": refused, "served_256k": served},
        "cloud": cloud,
        "ratios": {
            "kills_lost_ratio": {
                "value": kills["lost_total"] / max(kills["sent_total"], 1),
                "target": "0",
            },
            "freeze_worst_vs_budget": {
                "value": round(freeze["worst_during_freeze_ms"] / 1000 / BUDGET_S, 3),
                "target": "< 0.1 (one attempt timeout plus a retry)",
            },
            "swap_worst_vs_budget": {
                "value": round(worst_swap / BUDGET_S, 3),
                "target": "<= 1 (+ scheduling)",
            },
            "huge_refused_health_worst_vs_100ms": {
                "value": round(refused["health_worst_ms"] / HEALTH_TARGET_MS, 3),
                "target": "< 1",
            },
            "huge_refused_health_worst_vs_bare_grpc_aio": {
                "value": round(refused["health_worst_ms"] / max(bare_ms, 0.1), 3),
                "target": "~1 (the rest is grpc.aio taking in 32 MB)",
            },
            "huge_refused_rss_after_vs_before": {
                "value": refused["rss_after_vs_before"],
                "target": "< 1.10",
            },
            "huge_served_health_worst_vs_100ms": {
                "value": round(served["health_worst_ms"] / HEALTH_TARGET_MS, 3),
                "target": "< 1",
            },
            "cloud_recovered_vs_2s_backoff": {
                "value": round((cloud["recovered_s"] or 60.0) / 2.0, 3),
                "target": "<= 1",
            },
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1, default=str))
