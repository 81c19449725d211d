"""The data plane on its own: no servicer, no dispatcher, no sockets."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1.health import aio as health_aio
from hatswarm_agent.control.artifacts import ArtifactStore
from hatswarm_agent.control.lifecycle import Backends, ModelLifecycle
from hatswarm_agent.control.sources import ArtifactSources
from hatswarm_agent.protocol.params import ParameterError
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.serving.dataplane import DataPlane
from hatswarm_agent.serving.errors import ModelNotFoundError, UnknownAdapterError, status_for
from hatswarm_agent.serving.metrics import AgentMetrics
from hatswarm_agent.serving.registry import ModelRegistry

from tests.onnxmodels import build_mlp


async def loaded(tmp_path: Path) -> tuple[DataPlane, ModelLifecycle]:
    registry, metrics = ModelRegistry(), AgentMetrics()
    lc = ModelLifecycle(
        registry,
        metrics,
        ArtifactStore(tmp_path / "cache", 1 << 30),
        Backends("onnxruntime", "cpu"),
        health_aio.HealthServicer(),
        sources=ArtifactSources(),
    )
    path = build_mlp(tmp_path / "m.onnx", in_dim=4, hidden=8, out=3)
    entry = await lc.load(  # as a command-line model: the agent's own configuration
        control_pb2.LoadModelRequest(name="m", uri=str(path), options={"workers": "1"}),
        trusted=True,
    )
    assert entry.ready, entry.reason
    return DataPlane(registry, metrics), lc


def request(model: str = "m") -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name=model, id="r1")
    r.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    r.raw_input_contents.append(np.ones((2, 4), np.float32).tobytes())
    return r


def failures(plane: DataPlane, model: str, reason: str) -> float:
    value = plane.metrics.registry.get_sample_value(
        "hatswarm_inference_request_failure_total",
        {"model": model, "version": "1" if model else "", "reason": reason},
    )
    return value or 0.0


async def test_serve_runs_here_and_counts(tmp_path: Path) -> None:
    plane, lc = await loaded(tmp_path)
    try:
        response = await plane.serve(request())
        assert response.id == "r1" and response.model_version == "1"
        assert list(response.outputs[0].shape) == [2, 3]
        assert (await plane.infer(request(), None)).raw_output_contents == (
            response.raw_output_contents
        )
        assert plane.registry.get("m").stats.success == 2
    finally:
        await lc.close()


async def test_refusals_raise_domain_errors_and_count(tmp_path: Path) -> None:
    plane, lc = await loaded(tmp_path)
    try:
        with pytest.raises(ModelNotFoundError):
            await plane.serve(request("nope"))
        assert failures(plane, "", "not_found") == 1
        r = request()
        r.parameters["adapter"].int64_param = 1
        with pytest.raises(ParameterError) as bad:
            await plane.serve(r)
        assert status_for(bad.value)[0] == grpc.StatusCode.INVALID_ARGUMENT
        r.parameters["adapter"].string_param = "x"
        with pytest.raises(UnknownAdapterError) as unknown:
            await plane.serve(r)
        assert str(unknown.value) == (
            "adapter 'x' is not known for model 'm' version '1' (known: none)"
        )
        assert failures(plane, "m", "invalid_argument") == 1
        assert failures(plane, "m", "not_found") == 1
        assert plane.registry.get("m").stats.failure == 2
    finally:
        await lc.close()
