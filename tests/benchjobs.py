"""Benchmark runs that import tritonclient, for `tritonjobs.run` to execute in a child process
(the pytest process holds the agent's own OIP stubs; see tritonjobs.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def agent_bench_run(models_dir: str, models: list[str]) -> dict[str, Any]:
    """One quick node-agent benchmark run without peers (floor, agent, raw)."""
    spec = importlib.util.spec_from_file_location(
        "hatswarm_agent_bench", BENCH_DIR / "agent_bench.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    results: dict[str, Any] = module.run(
        quick=True, peers=False, models_dir=Path(models_dir), only_models=models
    )
    return results
