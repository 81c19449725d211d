"""Memory of a real agent: what each session costs is exported, and a burst's memory comes back.

A CNN whose 8-image batch needs ~50 MB of activations: after such a batch the agent holds that
memory (onnxruntime's arena keeps it); once the queue has been idle for a second it must give
most of it back, and keep answering correctly.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.agentproc import free_port, start_agent
from tests.onnxmodels import build_cnn
from tests.polling import poll

pytestmark = pytest.mark.integration

SIZE, CHANNELS = 224, 32  # batch 8: 8 x 32 x 224 x 224 floats = 51 MB per activation


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


def infer(stub: pb_grpc.GRPCInferenceServiceStub, batch: int) -> np.ndarray:
    image = np.random.default_rng(batch).integers(0, 255, (batch, 3, SIZE, SIZE), np.uint8)
    request = pb.ModelInferRequest(model_name="cnn")
    request.inputs.add(name="image", datatype="UINT8", shape=image.shape)
    request.raw_input_contents.append(image.tobytes())
    reply = stub.ModelInfer(request, timeout=60)
    return np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(batch, 10)


def test_sessions_report_their_memory_and_a_burst_is_given_back(tmp_path: Path) -> None:
    model = build_cnn(tmp_path / "cnn.onnx", size=SIZE, channels=CHANNELS)
    metrics = free_port()
    with start_agent(
        ["--model", f"cnn={model}", "--metrics-port", str(metrics), "--max-message-bytes",
         str(8 << 20)]
    ) as agent:  # fmt: skip
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        sessions = re.findall(
            r'hatswarm_model_memory_bytes\{[^}]*session="(\w+)"[^}]*\} (\S+)', text
        )
        assert "narrow" in dict(sessions), text[-2000:]
        with grpc.insecure_channel(agent.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            lone = infer(stub, 1)
            before = rss_mb(agent.proc.pid)
            burst = infer(stub, 8)
            grown = rss_mb(agent.proc.pid) - before
            assert grown > 30, f"an 8-image batch should take memory (grew {grown:.0f} MB)"
            # Idle for a second after the burst: the arena shrinks back.
            assert poll(lambda: rss_mb(agent.proc.pid) - before < grown / 2, within=15), (
                f"{rss_mb(agent.proc.pid) - before:.0f} MB of a {grown:.0f} MB burst kept"
            )
            np.testing.assert_allclose(infer(stub, 1), lone, rtol=1e-5)
            assert burst.shape == (8, 10)
