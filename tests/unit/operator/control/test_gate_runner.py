"""The gate runner's tensor plumbing: sample inputs onto the wire, responses back to arrays."""

from __future__ import annotations

import numpy as np
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_operator.control.converters import decode_outputs, encode_tensor
from hatswarm_operator.core import gate as vg


def test_raw_outputs_decode_to_arrays_of_their_datatype_and_shape() -> None:
    resp = pb.ModelInferResponse(model_name="m", model_version="2")
    resp.outputs.add(name="y", datatype="FP32", shape=[1, 2])
    resp.raw_output_contents.append(np.array([2, 4], dtype="<f4").tobytes())
    resp.outputs.add(name="h", datatype="BF16", shape=[2])
    bf16 = (np.array([1.5, -2.0], dtype="<f4").view("<u4") >> 16).astype("<u2")
    resp.raw_output_contents.append(bf16.tobytes())
    out = decode_outputs(resp)
    y, h = np.asarray(out["y"]), np.asarray(out["h"])
    assert y.dtype == np.float32 and y.shape == (1, 2) and y.tolist() == [[2.0, 4.0]]
    assert h.tolist() == [1.5, -2.0]


def test_typed_outputs_decode_and_a_wrong_count_is_left_for_evaluate() -> None:
    resp = pb.ModelInferResponse(model_name="m")
    t = resp.outputs.add(name="label", datatype="INT64", shape=[1, 2])
    t.contents.int64_contents.extend([7, 3])
    bad = resp.outputs.add(name="y", datatype="FP32", shape=[1, 3])
    bad.contents.fp32_contents.extend([1.0, 2.0])
    out = decode_outputs(resp)
    assert np.asarray(out["label"]).dtype == np.int64
    gate = vg.Gate(
        (
            vg.Sample(
                (vg.Tensor("x", "FP32", (1,), (0.0,)),),
                (vg.Tensor("y", "FP32", (1, 3), (1.0, 2.0, 3.0)),),
            ),
        )
    )
    result = vg.evaluate(gate, [vg.SampleRun(out, 1.0)])
    assert not result.passed and "shape [2] vs expected [1,3]" in result.message


def test_inputs_go_raw_little_endian_and_bf16_as_its_upper_bits() -> None:
    spec, raw = encode_tensor(vg.WireTensor("x", "INT16", (2,), np.array([1, -2], dtype=np.int16)))
    assert spec == {"name": "x", "datatype": "INT16", "shape": [2]}
    assert np.frombuffer(raw, dtype="<i2").tolist() == [1, -2]
    _, raw = encode_tensor(vg.WireTensor("x", "BF16", (1,), np.array([1.5], dtype=np.float32)))
    assert raw == (np.array([1.5], dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
