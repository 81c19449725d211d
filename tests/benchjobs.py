"""Benchmark runs that import tritonclient, for `tritonjobs.run` to execute in a child process
(the pytest process holds the agent's own OIP stubs; see tritonjobs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.scripts import load_script

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def agent_bench_run(models_dir: str, models: list[str]) -> dict[str, Any]:
    """One quick node-agent benchmark run without peers (floor, agent, raw)."""
    module = load_script(BENCH_DIR / "agent_bench.py", "hatswarm_agent_bench")
    results: dict[str, Any] = module.run(
        quick=True, peers=False, models_dir=Path(models_dir), only_models=models
    )
    return results
