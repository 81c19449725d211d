"""Start real `hatswarm-agent` processes on loopback, and build small ONNX models for them.

Shared by the agent's integration tests and by anyone who needs a live agent (operator local
mode, benchmarks). Import it after putting `tests/` on sys.path:

    sys.path.insert(0, str(Path(__file__).resolve().parents[N]))  # the tests/ folder
    from agentproc import start_agent, build_mlp

`start_agent([...])` returns once the agent printed its ready line; `AgentProcess.stop()`
sends SIGTERM and waits (then kills), and is safe to call twice.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save_model

READY_PREFIX = "hatswarm-agent ready on "


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class AgentProcess:
    """A running agent: its address and how to stop it."""

    proc: subprocess.Popen[str]
    host: str
    port: int
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful), then SIGKILL after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_agent(
    args: Sequence[str],
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> AgentProcess:
    """Run `hatswarm-agent --host HOST --port PORT *args` and wait for its ready line.

    `port=0` lets the agent pick a free port (read back from the ready line). Raises
    RuntimeError with the agent's stderr when it exits or stays silent for `timeout` s.
    """
    fd, name = tempfile.mkstemp(prefix="hatswarm-agent-", suffix=".stderr")
    os.close(fd)
    stderr_path = Path(name)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "hatswarm_agent.cli", "--host", host, "--port", str(port)]
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(
            [*cmd, *args], stdout=subprocess.PIPE, stderr=err, text=True, env=full_env
        )
    agent = AgentProcess(proc, host, port, stderr_path)
    assert proc.stdout is not None
    ready = threading.Event()
    threading.Thread(target=_pump, args=(proc.stdout, agent, ready), daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            agent.kill()
            raise RuntimeError(
                f"agent did not become ready (exit {proc.returncode}):\n{agent.stderr()}"
            )
    return agent


def _pump(stream: IO[str], agent: AgentProcess, ready: threading.Event) -> None:
    for line in stream:
        agent.stdout_lines.append(line)
        if line.startswith(READY_PREFIX):
            agent.port = int(line.rsplit(":", 1)[1])
            ready.set()


# -- models ------------------------------------------------------------------------------------


def _save(graph: object, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])  # type: ignore[arg-type]
    model.ir_version = 8
    save_model(model, str(path))
    return path


def build_mlp(
    path: Path, in_dim: int = 64, hidden: int = 256, out: int = 10, seed: int = 0
) -> Path:
    """FP32 MLP x[N,in] -> relu -> y[N,out], dynamic batch: the micro-batching case."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((in_dim, hidden)) / np.sqrt(in_dim)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, out)) / np.sqrt(hidden)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return _save(graph, path)


def build_cnn(path: Path, size: int = 32, channels: int = 8, classes: int = 10) -> Path:
    """uint8 image [N,3,S,S] -> cast/scale -> conv -> relu -> pool -> dense -> FP32 [N,classes]."""
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.1
    dense = rng.standard_normal((channels, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["f", "scale"], ["s"]),
            helper.make_node("Conv", ["s", "kernel"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["flat"]),
            helper.make_node("MatMul", ["flat", "dense"], ["logits"]),
        ],
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [
            numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
            numpy_helper.from_array(kernel, "kernel"),
            numpy_helper.from_array(dense, "dense"),
        ],
    )
    return _save(graph, path)


def build_fp16(path: Path, dim: int = 8) -> Path:
    """FP16 in, FP16 out: y = x * 2 + 1 (FP16 travels raw only)."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["m"]),
            helper.make_node("Add", ["m", "one"], ["y"]),
        ],
        "fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", dim])],
        [
            numpy_helper.from_array(np.array(2, dtype=np.float16), "two"),
            numpy_helper.from_array(np.array(1, dtype=np.float16), "one"),
        ],
    )
    return _save(graph, path)


def build_two_inputs(path: Path) -> Path:
    """Fixed shapes, no batch dim: a[2,3] INT64 + b[2,3] INT64 -> sum INT64, prod FP64."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["p"]),
            helper.make_node("Cast", ["p"], ["prod"], to=TensorProto.DOUBLE),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [2, 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.INT64, [2, 3]),
            helper.make_tensor_value_info("prod", TensorProto.DOUBLE, [2, 3]),
        ],
    )
    return _save(graph, path)
