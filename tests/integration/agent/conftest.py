"""Real `hatswarm-agent` processes on loopback with models built by onnx.helper.

Processes come from tests/agentproc.py, models from tests/onnxmodels.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.agentproc import AgentProcess, start_agent
from tests.onnxmodels import build_cnn, build_fp16, build_mlp, build_two_inputs


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlp (dynamic batch FP32), cnn (UINT8 image), fp16, two (fixed INT64 pair)."""
    d = tmp_path_factory.mktemp("agent-models")
    build_mlp(d / "mlp.onnx")
    build_cnn(d / "cnn.onnx")
    build_fp16(d / "fp16.onnx")
    build_two_inputs(d / "two.onnx")
    return d


@pytest.fixture(scope="session")
def agent(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One onnxruntime agent serving every test model and a broken one, shared by the modules
    here (test_lora.py has its own): they send requests and read status, and what they assert
    holds for an agent that has served other modules first (`>=` counts; test_control's empty
    routing table leaves local serving as it was; test_fuzz checks the answers after fuzzing)."""
    broken = tmp_path_factory.mktemp("broken") / "broken.onnx"
    broken.write_bytes(b"definitely not onnx")
    proc = start_agent(
        [
            "--model-dir", str(model_dir),
            "--model", f"broken={broken}",
            "--max-message-bytes", str(1 << 20),
            "--option", "workers=2",
            "--strict-readiness=false",  # the broken model must not make ServerReady false
        ]
    )  # fmt: skip
    yield proc
    proc.stop()


@pytest.fixture
def channel(agent: AgentProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(agent.address) as ch:
        yield ch
