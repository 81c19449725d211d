"""Smoke test of the fleet benchmark: a dozen simulated nodes, both ways of reading, a few
seconds each. It checks the harness runs end to end and its figures hang together (no timing
targets: those live in the benchmark's own results)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts import load_script

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"


def _load() -> ModuleType:
    sys.path.insert(0, str(BENCH_DIR))
    return load_script(BENCH_DIR / "fleet_bench.py", "fleet_bench_under_test")


def test_fleet_bench_runs_both_designs(tmp_path: Path) -> None:
    bench = _load()
    result = bench.run(sizes=((12, 4),), steady_s=3.0, ha=False, chart_path=tmp_path / "fleet.png")
    watch, listed = result["runs"]
    assert (watch["reads"], listed["reads"]) == ("watch", "list")
    assert watch["steady"]["reads_per_s"] == 0.0  # the caches: no reads while nothing changes
    assert listed["steady"]["reads_per_s"] > 1.0  # three lists a tick
    assert watch["stream_messages_per_s"] > 0  # the agents push their status
    for run in result["runs"]:
        assert run["duplicate_loads"] == 0
        # agents are followed by status streams (watch) or probed in the tick (list)
        assert run["probes_per_s"] > 0 or run["stream_messages_per_s"] > 0
        assert run["operator_peak_rss_mb"] > 0
        assert all(r["recovery_s"] > 0 for r in run["failover"]["rounds"])
    assert "reads_per_s_list_vs_watch_n12_m4" in result["ratios"]
    assert (tmp_path / "fleet.png").stat().st_size > 10_000
