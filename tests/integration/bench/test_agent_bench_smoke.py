"""Smoke test of the node-agent benchmark: models build, raw baseline measures sane numbers.

No peers, no agent, no timing assertions: tiny iteration counts so it runs in seconds.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.integration

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"


def _load(name: str, filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / filename)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load("hatswarm_agent_bench_under_test", "agent_bench.py")


@pytest.fixture(scope="module")
def model_paths(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths: dict[str, Path] = bench.models.build_models(tmp_path_factory.mktemp("models")).as_dict()
    return paths


def test_models_build_valid_with_dynamic_batch(
    bench: ModuleType, model_paths: dict[str, Path]
) -> None:
    expected = {
        "cnn": (bench.models.CNN_INPUT, ["batch", 224, 224, 3], onnx.TensorProto.UINT8),
        "mlp": (bench.models.MLP_INPUT, ["batch", 16], onnx.TensorProto.FLOAT),
    }
    for name, (input_name, dims, elem_type) in expected.items():
        model = onnx.load(str(model_paths[name]))
        onnx.checker.check_model(model)
        (graph_input,) = model.graph.input
        assert graph_input.name == input_name
        assert graph_input.type.tensor_type.elem_type == elem_type
        shape = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
        assert shape == dims


def test_models_are_deterministic(bench: ModuleType, model_paths: dict[str, Path]) -> None:
    assert bench.models.build_mlp(1).SerializeToString() == model_paths["mlp"].read_bytes()
    assert bench.models.build_cnn(0).SerializeToString() == model_paths["cnn"].read_bytes()


def test_raw_baseline_measures_sensible_numbers(
    bench: ModuleType, model_paths: dict[str, Path]
) -> None:
    raw = bench.RawTarget(model_paths)
    work = bench.workloads()

    cnn = raw.caller(work["cnn"], 1)()
    assert cnn.shape == (1, 1000)
    assert np.isfinite(cnn).all()
    mlp = raw.caller(work["mlp"], 2)()
    assert mlp.shape == (1, 4)

    for name in ("cnn", "mlp"):
        lat = bench.measure_latency(raw.caller(work[name], 1), seconds=0.0, min_samples=3)
        assert lat["samples"] == 3
        assert 0 < lat["p50_ms"] <= lat["p99_ms"] < 10_000
        rps = bench.measure_throughput(lambda n=name: raw.caller(work[n], 1), 2, 0.05)
        assert math.isfinite(rps)
        assert rps > 0


def test_ratios_and_table_from_figures(bench: ModuleType) -> None:
    def server(cnn_p50: float, cnn_rps: float, mlp_p50: float, mlp_rps: float) -> dict[str, object]:
        return {
            "status": "ok",
            "cnn": {"p50_ms": cnn_p50, "throughput_rps": cnn_rps},
            "mlp": {"p50_ms": mlp_p50, "throughput_rps": mlp_rps},
        }

    servers = {
        "raw": server(10.0, 100.0, 0.02, 40_000.0),
        "agent": server(11.0, 97.0, 0.8, 1500.0),
        "kserve_tuned": server(15.0, 70.0, 1.6, 800.0),
        "mlserver_default": {"status": "skipped", "reason": "no network"},
    }
    ratios = bench.compute_ratios(servers)
    assert ratios["cnn_p50_agent_over_raw"]["value"] == pytest.approx(1.1)
    assert ratios["cnn_p50_agent_over_raw"]["met"] is True
    assert ratios["cnn_throughput_agent_over_raw"]["met"] is True
    assert ratios["mlp_throughput_agent_over_kserve_tuned"]["value"] == pytest.approx(1.875)
    assert ratios["mlp_throughput_agent_over_mlserver_tuned"]["value"] is None
    table = bench.format_table({"servers": servers, "ratios": ratios})
    assert "skipped: no network" in table
    assert "hatswarm-agent" in table
