"""Control service, health, reflection, restart from disk, queue limits and graceful stop."""

from __future__ import annotations

import hashlib
import math
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_agent.serving.metrics import METRIC_NAMES

from tests.agentproc import AgentProcess, free_port, start_agent

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def infer_mlp(channel: grpc.Channel, model: str = "mlp") -> pb.ModelInferResponse:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    req.raw_input_contents.append(np.ones((1, 64), np.float32).tobytes())
    return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req)


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition (not a timing assertion: the timeout only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_health_per_model_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="mlp")).status == SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="broken")).status == NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(
        iter(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
    )
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "inference.GRPCInferenceService",
        "hatswarm.v1.AgentControl",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


def test_node_status_reports_models_and_failures(channel: grpc.Channel) -> None:
    infer_mlp(channel)
    control = control_pb2_grpc.AgentControlStub(channel)
    status = control.NodeStatus(control_pb2.NodeStatusRequest())
    assert status.accelerator == "cpu" and not status.gateway
    assert math.isnan(status.temperature_c)
    models = {m.name: m for m in status.models}
    assert models["mlp"].state == control_pb2.MODEL_STATE_READY
    assert models["mlp"].request_success >= 1 and models["mlp"].latency.p50_ms > 0
    assert models["mlp"].capacity_fps > 0 and len(models["mlp"].sha256) == 64
    assert models["broken"].state == control_pb2.MODEL_STATE_FAILED
    assert "cannot load ONNX model" in models["broken"].reason
    assert control.SetRoutingTable(control_pb2.RoutingTable(generation=3)).generation == 3
    assert control.SetRoutingTable(control_pb2.RoutingTable(generation=2)).generation == 3
    assert control.NodeStatus(control_pb2.NodeStatusRequest()).routing_generation == 3


def test_load_unload_restart_from_disk(model_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    mlp = model_dir / "mlp.onnx"
    digest = hashlib.sha256(mlp.read_bytes()).hexdigest()
    port = free_port()
    roots = ["--allow-file-root", str(model_dir)]  # LoadModel reads files only from there
    with start_agent(["--state-dir", str(state), *roots], port=port) as agent:
        ch = grpc.insecure_channel(agent.address)
        control = control_pb2_grpc.AgentControlStub(ch)
        ok = control.LoadModel(
            control_pb2.LoadModelRequest(name="m", version="2", uri=f"file://{mlp}", sha256=digest)
        )
        assert ok.state == control_pb2.MODEL_STATE_READY and ok.sha256 == digest
        again = control.LoadModel(
            control_pb2.LoadModelRequest(name="m", version="2", uri=str(mlp), sha256=digest)
        )
        assert again.loaded_at_unix_ms == ok.loaded_at_unix_ms  # idempotent: not reloaded
        bad = control.LoadModel(
            control_pb2.LoadModelRequest(name="bad", uri=str(mlp), sha256="0" * 64)
        )
        assert bad.state == control_pb2.MODEL_STATE_FAILED and "digest mismatch" in bad.reason
        with pytest.raises(grpc.RpcError) as info:  # the cache admits only verified artifacts
            control.LoadModel(control_pb2.LoadModelRequest(name="gone", uri=str(mlp)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needs a sha256" in (info.value.details() or "")
        other = control.LoadModel(
            control_pb2.LoadModelRequest(name="gone", uri=str(mlp), sha256=digest)
        )
        assert other.state == control_pb2.MODEL_STATE_READY
        assert list(
            control.UnloadModel(control_pb2.UnloadModelRequest(name="gone")).unloaded_versions
        ) == ["1"]
        with pytest.raises(grpc.RpcError) as info:
            control.LoadModel(control_pb2.LoadModelRequest(name="", uri=str(mlp)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert infer_mlp(ch, "m").model_version == "2"
        ch.close()
    with start_agent(["--state-dir", str(state), *roots], port=port) as agent:  # from disk
        ch = grpc.insecure_channel(agent.address)
        assert infer_mlp(ch, "m").model_version == "2"
        names = {
            m.name
            for m in control_pb2_grpc.AgentControlStub(ch)
            .NodeStatus(control_pb2.NodeStatusRequest())
            .models
        }
        assert names == {"m"}
        with pytest.raises(grpc.RpcError) as info:
            infer_mlp(ch, "gone")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        ch.close()


@pytest.fixture(scope="module")
def slow_agent(model_dir: Path) -> AgentProcess:
    """A simulated Hailo-8L paced to 2 s per inference, one request admitted at a time."""
    agent = start_agent(
        [
            "--backend", "simulated", "--accelerator", "hailo8l", "--queue-limit", "1",
            "--model", f"mlp={model_dir / 'mlp.onnx'}", "--option", "fps_batch1=0.5",
            "--metrics-port", str(free_port()), "--grace-seconds", "10",
        ]
    )  # fmt: skip
    yield agent  # type: ignore[misc]
    agent.stop()


def test_full_queue_is_resource_exhausted_at_once(slow_agent: AgentProcess) -> None:
    ch = grpc.insecure_channel(slow_agent.address)
    control = control_pb2_grpc.AgentControlStub(ch)
    req = pb.ModelInferRequest(model_name="mlp")
    req.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    req.raw_input_contents.append(np.ones((1, 64), np.float32).tobytes())
    stub = pb_grpc.GRPCInferenceServiceStub(ch)
    first = stub.ModelInfer.future(req)
    wait_for(lambda: control.NodeStatus(control_pb2.NodeStatusRequest()).models[0].queue_depth == 1)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(req)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert first.result().outputs[0].name == "y"
    status = control.NodeStatus(control_pb2.NodeStatusRequest())
    assert status.accelerator == "hailo8l" and status.device_id == "simulated-hailo8l"
    assert status.watts > 0 and status.temperature_c > 0
    m = status.models[0]
    assert m.backend == "simulated" and m.capacity_fps == pytest.approx(0.5)
    assert m.compute_seconds > 0 and m.energy_joules > 0
    ch.close()


def test_metrics_endpoint_exports_every_name(slow_agent: AgentProcess) -> None:
    args = list(slow_agent.proc.args)  # type: ignore[arg-type]
    port = int(args[args.index("--metrics-port") + 1])
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for name in METRIC_NAMES:
        assert f"# HELP {name} " in text, name
    assert 'hatswarm_models_loaded{model="mlp",version="1"} 1.0' in text
    assert 'hatswarm_inference_count_total{model="mlp",version="1"}' in text
    assert 'hatswarm_npu_power_watts{accelerator="hailo8l"' in text


def test_sigterm_flips_health_then_finishes_in_flight_work(model_dir: Path) -> None:
    agent = start_agent(
        [
            "--backend", "simulated", "--model", f"mlp={model_dir / 'mlp.onnx'}",
            "--option", "fps_batch1=1", "--grace-seconds", "10",
        ]
    )  # fmt: skip
    try:
        ch = grpc.insecure_channel(agent.address)
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == SERVING
        req = pb.ModelInferRequest(model_name="mlp")
        req.inputs.add(name="x", datatype="FP32", shape=[1, 64])
        req.raw_input_contents.append(np.ones((1, 64), np.float32).tobytes())
        control = control_pb2_grpc.AgentControlStub(ch)
        in_flight = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer.future(req)
        wait_for(
            lambda: control.NodeStatus(control_pb2.NodeStatusRequest()).models[0].queue_depth == 1
        )
        agent.proc.terminate()
        assert next(watch).status == NOT_SERVING
        watch.cancel()  # an open Watch stream would hold the server for its whole grace period
        assert in_flight.result().outputs[0].name == "y"
        assert agent.proc.wait(30) == 0
        ch.close()
    finally:
        agent.kill()
