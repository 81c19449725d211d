"""The hostile side: what an attacker on the factory LAN runs against a pool (issue 16).

Everything here is real: agent processes (tests/agentproc.py), `hatswarm up`'s LocalPool, an
HTTP artifact server, and `Recorder`, a gRPC endpoint that answers any call and records its
method and metadata (what an attacker's endpoint, or a cloud, would see). Each test names the
attack it replays; every one of them succeeded against the code before issue 16.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.onnxmodels import build_mlp

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),) if token else ()


def control(address: str) -> control_pb2_grpc.AgentControlStub:
    return control_pb2_grpc.AgentControlStub(grpc.insecure_channel(address))


def oip(address: str) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))


def code_of(call: Any) -> grpc.StatusCode:
    """The status code a blocking call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def mlp_request(model: str = "mlp", dim: int = 8) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="x", datatype="FP32", shape=[1, dim])
    req.raw_input_contents.append(np.ones((1, dim), np.float32).tobytes())
    return req


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def private_file(path: Path, text: str) -> Path:
    """A node's secret, as an operator would keep it: 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


# -- an endpoint that records what reaches it ------------------------------------------------------


@dataclass
class Recorder:
    """Answers every unary call (an empty message: a valid, empty ModelInferResponse) and
    records (method, metadata) of each."""

    calls: list[tuple[str, Metadata]] = field(default_factory=list)
    server: Any = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metadata_values(self) -> set[str]:
        """Every metadata value any call carried."""
        return {v for _, md in self.calls for _, v in md}

    def metadata_keys(self) -> set[str]:
        return {k for _, md in self.calls for k, _ in md}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0)


class _Record(grpc.GenericRpcHandler):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            md = tuple(
                (k, v if isinstance(v, str) else v.decode())
                for k, v in context.invocation_metadata()
            )
            self.recorder.calls.append((method, md))
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)


def start_recorder() -> Recorder:
    """A Recorder listening on loopback (stop it with `.stop()`)."""
    rec = Recorder()
    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers([_Record(rec)])
    rec.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    rec.server = server
    return rec


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = start_recorder()
    try:
        yield rec
    finally:
        rec.stop()


# -- an HTTP artifact server ----------------------------------------------------------------------


@dataclass
class Files:
    """Serves `files` (path -> bytes) over HTTP on loopback."""

    files: dict[str, bytes] = field(default_factory=dict)
    url: str = ""

    def add(self, path: str, body: bytes) -> tuple[str, str]:
        self.files[path] = body
        return self.url + path, hashlib.sha256(body).hexdigest()


@pytest.fixture
def http_files() -> Iterator[Files]:
    served = Files()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir(exist_ok=True)
    return build_mlp(tmp_path / "models" / "mlp.onnx", in_dim=8, hidden=16, out=4)
