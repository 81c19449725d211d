"""The requests the chaos scenarios send (their models: tests/onnxmodels.py)."""

from __future__ import annotations

import numpy as np
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb


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
