"""Smoke test of the generation benchmark: the tiny model, one short round, real agent.

No timing assertions (speed targets live in the benchmark's report): the runtime and the agent
both generate the asked number of tokens (the benchmark checks it and raises otherwise), every
figure is there and positive, and the ratios are finite.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts import load_script

pytestmark = pytest.mark.integration

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(BENCH_DIR / "gen_bench.py", "hatswarm_gen_bench_under_test")


def test_tiny_round_measures_runtime_and_agent_paired(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "CACHE", tmp_path / "cache")
    result = bench.measure(bench.Case("tiny", max_tokens=8, rounds=1, ttft_pairs=2), threads=1)
    assert (tmp_path / "cache").is_dir()  # built there, nothing downloaded
    figures = result["figures"]
    assert set(figures) == {"runtime_1", "agent_1", "runtime_4", "agent_4", "single_4"}
    for key, row in figures.items():
        assert all(value > 0 for value in row.values()), key
    assert set(result["ratios"]) == {
        "tiny_decode_tps_agent_vs_its_runtime",
        "tiny_ttft_agent_vs_its_runtime",
        "tiny_decode_tps_agent_vs_runtime",
        "tiny_ttft_agent_vs_runtime",
        "tiny_runtime_ttft_process_spread",
        "tiny_ttft_prefix_cached_vs_cold",
        "tiny_agent_4seq_aggregate_vs_runtime_1seq",
        "tiny_agent_4seq_aggregate_vs_runtime_1seq_decode",
        "tiny_agent_4seq_one_process_aggregate_vs_runtime_1seq",
        "tiny_runtime_4seq_aggregate_vs_runtime_1seq",
    }
    # like with like: the 4-sequence target divides aggregate by aggregate, round by round
    rows = result["rows"]
    expected = statistics.median(
        r["agent_4"]["aggregate_tps"] / r["runtime_1"]["aggregate_tps"] for r in rows
    )
    got = result["ratios"]["tiny_agent_4seq_aggregate_vs_runtime_1seq"]["value"]
    assert got == pytest.approx(expected, abs=0.001)
    assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in result["ratios"].values())
    assert result["processes"] == bench.PROCESSES == 2
    assert math.isfinite(result["ttft_overhead_ms"])
    assert result["ttft_pairs"] == 3  # the round's and two short generations' differences
    # The agent's own overhead: its answers' timings (the runtime's time in its child process)
    # against the client's TTFT of the same requests, one a short generation.
    own = result["ttft_own_overheads_ms"]
    assert len(own) == 2 and all(math.isfinite(d) and d > 0 for d in own)
    assert result["ttft_own_overhead_ms"] == pytest.approx(
        statistics.median([rows[0]["agent_1"]["own_overhead_ms"], *own]), abs=0.001
    )
    assert 0 < rows[0]["agent_1"]["decode_vs_own_runtime"] < 10
    by_process = result["runtime_ttft_ms_by_process"]
    assert len(by_process) == 1 + bench.FRESH_PROCESSES and all(t > 0 for t in by_process)
    assert math.isfinite(result["load_average_before"])
    chart = tmp_path / "generation.png"
    bench.chart({"models": {"tiny": result}}, chart)
    if importlib.util.find_spec("matplotlib") is not None:  # the operator's plot extra
        assert chart.stat().st_size > 1000
