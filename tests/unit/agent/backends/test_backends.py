"""Backends: self-description from the ONNX model, simulated pacing maths, the registry."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from hatswarm_agent.backends import canonical_name, create_backend
from hatswarm_agent.backends.base import (
    Backend,
    BackendError,
    BackendUnavailableError,
    LoadedModel,
    ModelProfile,
)
from hatswarm_agent.backends.onnx import OnnxBackend
from hatswarm_agent.backends.simulated import (
    PROFILES,
    SimulatedBackend,
    SimulatedDevice,
    batch_seconds,
    resolve_profile,
)

from tests.onnxmodels import build_cnn, build_fp16, build_two_inputs


def test_onnx_describes_inputs_outputs_and_dynamic_batch(tmp_path: Path) -> None:
    backend = OnnxBackend()
    cnn = backend.load(build_cnn(tmp_path / "cnn.onnx"), {"max_batch_size": "4"})
    assert isinstance(cnn, LoadedModel) and isinstance(backend, Backend)
    assert [(s.name, s.datatype, s.shape) for s in cnn.inputs] == [
        ("image", "UINT8", (-1, 3, 32, 32))
    ]
    assert [(s.name, s.datatype, s.shape) for s in cnn.outputs] == [("logits", "FP32", (-1, 10))]
    assert cnn.max_batch_size == 4
    assert cnn.capacity_fps() > 0
    fixed = backend.load(build_two_inputs(tmp_path / "t.onnx"), {})
    assert fixed.max_batch_size == 0
    assert {s.datatype for s in fixed.outputs} == {"INT64", "FP64"}
    fp16 = backend.load(build_fp16(tmp_path / "h.onnx"), {})
    assert fp16.inputs[0].datatype == "FP16"


def test_onnx_runs_one_more_worker_than_cores_but_counts_capacity_by_cores(
    tmp_path: Path,
) -> None:
    """A spare worker keeps every core busy while another waits for the event loop to hand it
    the next request; it shares the cores, so the capacity the router sees does not grow."""
    cores = os.cpu_count() or 1
    path = build_cnn(tmp_path / "cnn.onnx")
    default = OnnxBackend().load(path, {})
    assert default.concurrency == cores + 1
    assert default.capacity_fps() == pytest.approx(cores / default.latency_s)
    many = OnnxBackend().load(path, {"workers": str(4 * cores)})
    assert many.concurrency == 4 * cores
    assert many.capacity_fps() == pytest.approx(cores / many.latency_s)
    one = OnnxBackend().load(path, {"workers": "1"})
    assert one.capacity_fps() == pytest.approx(1 / one.latency_s)


def test_onnx_bad_file_and_bad_options_are_backend_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot load ONNX model"):
        OnnxBackend().load(junk, {})
    good = build_fp16(tmp_path / "h.onnx")
    with pytest.raises(BackendError, match="intra_op_threads='x' is not an integer"):
        OnnxBackend().load(good, {"intra_op_threads": "x"})
    with pytest.raises(BackendError, match="graph_optimization"):
        OnnxBackend().load(good, {"graph_optimization": "max"})


def test_logreg_iris_shipped_with_onnxruntime_skips_its_zipmap(tmp_path: Path) -> None:
    import onnxruntime

    path = Path(onnxruntime.__file__).parent / "datasets" / "logreg_iris.onnx"
    model = OnnxBackend().load(path, {})
    assert [s.name for s in model.outputs] == ["label"]
    assert model.max_batch_size == 0  # fixed [3, 2]: no batch dimension
    out = model.run({"float_input": np.zeros((3, 2), np.float32)})
    assert out["label"].shape == (3,)


def test_batch_seconds_interpolates_between_profiled_points() -> None:
    p = PROFILES["hailo8l"]["yolov8s"]
    assert batch_seconds(p, 1) == pytest.approx(1 / 110)
    assert batch_seconds(p, 8) == pytest.approx(8 / 208)
    assert batch_seconds(p, 1) < batch_seconds(p, 4) < batch_seconds(p, 8)
    assert batch_seconds(p, 16) == pytest.approx(16 / 208)
    assert batch_seconds(ModelProfile(100, 100, latency_ms_batch1=25), 1) == pytest.approx(0.025)


def test_profiles_resolve_from_options_then_name() -> None:
    assert resolve_profile("hailo8", {}, "yolov8s").fps_batch1 == 491
    assert resolve_profile("hailo8l", {"profile": "resnet_v1_50"}, "x").fps_batch8 == 502
    explicit = resolve_profile("hailo8l", {"fps_batch1": "10"}, "yolov8s")
    assert (explicit.fps_batch1, explicit.fps_batch8) == (10, 10)
    with pytest.raises(BackendError, match="unknown profile"):
        resolve_profile("hailo8l", {"profile": "gpt"}, "x")


def test_simulated_model_is_paced_and_matches_onnxruntime(tmp_path: Path) -> None:
    path = build_fp16(tmp_path / "h.onnx")
    backend = SimulatedBackend("hailo8l")
    model = backend.load(path, {"fps_batch1": "1000", "slowdown": "2", "model_name": "h"})
    assert model.capacity_fps() == pytest.approx(500)
    x = np.ones((3, 8), np.float16)
    np.testing.assert_array_equal(
        model.run({"x": x})["y"], OnnxBackend().load(path, {}).run({"x": x})["y"]
    )
    assert backend.device_info().accelerator == "hailo8l"


def test_simulated_device_heats_with_load() -> None:
    device = SimulatedDevice("hailo8")
    idle = device.info()
    now = time.monotonic()
    device.record(now - 5, now)
    busy = device.info()
    assert idle.watts is not None and busy.watts is not None
    assert busy.watts > idle.watts
    assert busy.temperature_c is not None and idle.temperature_c is not None
    assert busy.temperature_c > idle.temperature_c


def test_registry_names_and_clear_errors() -> None:
    assert canonical_name("onnx") == "onnxruntime"
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        create_backend("tpu")
    with pytest.raises(BackendError, match="accelerator hailo8l, hailo8 or hailo10h"):
        SimulatedBackend("cpu")
    assert create_backend("simulated", "hailo10h").device_info().accelerator == "hailo10h"
    assert create_backend("simulated", "hailo8").device_info().accelerator == "hailo8"
    try:
        import hailo_platform  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="hailo"):
            create_backend("hailo")


def test_profile_found_by_a_kubernetes_style_name() -> None:
    """EdgeModel names cannot hold '_': `mobilenet-v2` finds the `mobilenet_v2` profile."""
    from hatswarm_agent.backends.simulated import DEFAULT_PROFILE, PROFILES, resolve_profile

    assert "mobilenet_v2" in PROFILES["hailo8l"] and DEFAULT_PROFILE != "mobilenet_v2"
    dashed = resolve_profile("hailo8l", {}, "mobilenet-v2")
    assert dashed == resolve_profile("hailo8l", {}, "mobilenet_v2")
    assert dashed != resolve_profile("hailo8l", {}, "no-such-model")
