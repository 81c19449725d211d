"""Smoke test of the llama.cpp benchmark (bench/gguf_bench.py): its quick round runs both sides
on the tiny GGUF and they generate the same number of tokens. No timing assertions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.externaltools import missing
from tests.scripts import load_script

pytestmark = pytest.mark.integration

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"


def test_quick_round_measures_both_sides() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        missing("llama-cpp-python", "run `make gguf`")
    bench = load_script(BENCH_DIR / "gguf_bench.py", "hatswarm_gguf_bench")
    out = bench.run(quick=True)
    tiny = out["tiny"]
    assert tiny["direct"]["tokens"] == tiny["agent"]["tokens"] == out["tokens"]
    for side in ("direct", "agent"):
        assert tiny[side]["tokens_per_s"] > 0 and tiny[side]["ttft_ms"] > 0
    assert tiny["tokens_per_s_agent_vs_direct"] > 0
    # Measured on the agent's own answers: the runtime's timings came back with every round.
    assert len(tiny["decode_vs_own_runtime_per_round"]) == out["rounds"]
    assert tiny["decode_vs_own_runtime"] > 0 and tiny["ttft_own_overhead_ms"] > 0
