"""Real agent processes choosing their backend by what the node has (issue 13, item 1).

A node without HailoRT is this machine; a node with each AI HAT+ chip is an agent process that
imports the HailoRT test double (tests/fakes on its PYTHONPATH, the chip from
HATSWARM_FAKE_HAILO_CHIP).
"""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.agentproc import AgentProcess, free_port, start_agent
from tests.hailodouble import agent_env, write_hef

pytestmark = pytest.mark.integration


def status(agent: AgentProcess) -> control_pb2.NodeStatusResponse:
    with grpc.insecure_channel(agent.address) as ch:
        reply: control_pb2.NodeStatusResponse = control_pb2_grpc.AgentControlStub(ch).NodeStatus(
            control_pb2.NodeStatusRequest(), timeout=10
        )
        return reply


def load(agent: AgentProcess, **fields: str) -> control_pb2.ModelStatus:
    """LoadModel as the control plane sends it: the artifact's sha256 always named."""
    path = Path(fields["uri"].removeprefix("file://"))
    fields.setdefault("sha256", hashlib.sha256(path.read_bytes()).hexdigest())
    with grpc.insecure_channel(agent.address) as ch:
        reply: control_pb2.ModelStatus = control_pb2_grpc.AgentControlStub(ch).LoadModel(
            control_pb2.LoadModelRequest(**fields), timeout=30
        )
        return reply


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
        return text


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for a in started:
        a.stop()


def test_auto_without_hailort_serves_on_the_cpu_and_says_so(
    agents: list[AgentProcess], model_dir: Path
) -> None:
    port = free_port()
    agent = start_agent(
        ["--backend", "auto", "--accelerator", "hailo8l", "--metrics-port", str(port),
         "--log-level", "INFO", "--allow-file-root", str(model_dir)]
    )  # fmt: skip
    agents.append(agent)
    st = status(agent)
    assert (st.backend, st.backend_error, st.accelerator) == ("onnxruntime", "", "cpu")
    assert load(agent, name="mlp", uri=str(model_dir / "mlp.onnx")).state == (
        control_pb2.MODEL_STATE_READY
    )
    text = metrics(port)
    assert (
        'hatswarm_agent_backend_info{accelerator="cpu",backend="onnxruntime",device="",'
        'ready="true",requested="auto"} 1.0'
    ) in text
    assert "auto: serving on the CPU" in agent.stderr()
    assert "started as a hailo8l node" in agent.stderr()  # the label said NPU: a warning


@pytest.mark.parametrize("chip", ["hailo8l", "hailo8", "hailo10h"])
def test_auto_with_a_chip_reports_it_and_serves_hefs_and_onnx(
    agents: list[AgentProcess], tmp_path: Path, model_dir: Path, chip: str
) -> None:
    roots = ["--allow-file-root", str(model_dir), "--allow-file-root", str(tmp_path)]
    agent = start_agent(["--accelerator", "cpu", *roots], env=agent_env(chip))  # default: auto
    agents.append(agent)
    st = status(agent)
    assert (st.backend, st.backend_error, st.accelerator) == ("hailo", "", chip)
    assert st.device_id == f"FAKE{chip.upper()}0001"
    hef = write_hef(tmp_path / "det.hef", chip)
    assert load(agent, name="det", uri=str(hef), format="hef").state == (
        control_pb2.MODEL_STATE_READY
    )
    # An ONNX artifact placed on an NPU node runs on the node's CPU, next to the HEF.
    onnx = load(agent, name="mlp", uri=str(model_dir / "mlp.onnx"), format="onnx")
    assert onnx.state == control_pb2.MODEL_STATE_READY and onnx.backend == "onnxruntime"
    other = "hailo10h" if chip != "hailo10h" else "hailo8"
    wrong = load(agent, name="x", uri=str(write_hef(tmp_path / "x.hef", other)))
    assert wrong.state == control_pb2.MODEL_STATE_FAILED and "Invalid HEF" in wrong.reason
    with grpc.insecure_channel(agent.address) as ch:
        req = pb.ModelInferRequest(model_name="det")
        req.inputs.add(name="net/input_layer1", datatype="UINT8", shape=[1, 4, 4, 3])
        req.raw_input_contents.append(np.ones((1, 4, 4, 3), np.uint8).tobytes())
        reply = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10)
    assert reply.outputs[0].name == "net/fc1"


def test_pinned_hailo_without_the_chip_stays_up_and_reports_why(
    agents: list[AgentProcess], tmp_path: Path, model_dir: Path
) -> None:
    """No crash loop: the agent runs, refuses NPU loads with the reason, and says so."""
    port = free_port()
    agent = start_agent(
        [
            "--backend",
            "hailo",
            "--accelerator",
            "hailo8",
            "--metrics-port",
            str(port),
            "--allow-file-root",
            str(model_dir),
            "--allow-file-root",
            str(tmp_path),
        ],
        env=agent_env("none"),  # HailoRT installed, no device on the bus
    )
    agents.append(agent)
    st = status(agent)
    assert st.backend == ""
    assert st.backend_error.startswith("backend hailo unavailable: no usable Hailo device")
    hef = tmp_path / "det_h8.hef"
    hef.write_text("{}")
    failed = load(agent, name="det", uri=str(hef), format="hef")
    assert failed.state == control_pb2.MODEL_STATE_FAILED
    assert "backend hailo unavailable" in failed.reason
    assert 'backend="",' in metrics(port) and 'ready="false"' in metrics(port)
    assert "backend hailo unavailable" in agent.stderr()
    assert agent.proc.poll() is None
