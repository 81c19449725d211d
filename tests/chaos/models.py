"""Small ONNX models and requests the chaos scenarios use (built here, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from onnx import TensorProto, helper

from tests.agentproc import _save


def build_identity(path: Path, dim: int = 4) -> Path:
    """y = x, FP32 [N, dim]: requests cost nothing but the path they take."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])],
    )
    return _save(graph, path)


def build_strings(path: Path) -> Path:
    """y = s, BYTES [N]: the model a huge BYTES request is sent to."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["y"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["N"])],
    )
    return _save(graph, path)


def ident_request(i: int = 0, model: str = "ident") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, id=str(i))
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(np.full(4, float(i), dtype=np.float32).tobytes())
    return req


def strings_request(count: int, item: bytes = b"") -> pb.ModelInferRequest:
    """`count` copies of `item` in OIP's raw BYTES layout (4-byte length, then the bytes)."""
    req = pb.ModelInferRequest(model_name="strings")
    req.inputs.add(name="s", datatype="BYTES", shape=[count])
    req.raw_input_contents.append((len(item).to_bytes(4, "little") + item) * count)
    return req
