"""No request can crash the agent: random bytes, truncated requests and random tensors.

Well-formed protobuf with nonsense in it must never be INTERNAL (that would be a backend error
leaking through validation); undecodable bytes may be. Afterwards the agent still answers
correctly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.agentproc import AgentProcess

pytestmark = pytest.mark.integration

METHOD = "/inference.GRPCInferenceService/ModelInfer"
ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
DATATYPES = ["FP32", "FP16", "FP64", "INT64", "INT32", "UINT8", "BOOL", "BYTES", "BF16", "", "X"]
FIELDS = ["fp32_contents", "int64_contents", "int_contents", "uint_contents", "bool_contents"]


@pytest.fixture(scope="module")
def raw_call(agent: AgentProcess) -> Iterator[grpc.UnaryUnaryMultiCallable]:
    with grpc.insecure_channel(agent.address) as ch:
        yield ch.unary_unary(METHOD)  # bytes in, bytes out


def status_of(call: grpc.UnaryUnaryMultiCallable, payload: bytes) -> grpc.StatusCode:
    try:
        call(payload, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def valid_request() -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="mlp", id="fuzz")
    req.inputs.add(name="x", datatype="FP32", shape=[2, 64])
    req.raw_input_contents.append(np.ones((2, 64), np.float32).tobytes())
    return req


@st.composite
def tensors_requests(draw: st.DrawFn) -> bytes:
    req = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["mlp", "cnn", "two", "fp16", "broken", "nope", ""])),
        model_version=draw(st.sampled_from(["", "1", "2", "x"])),
        id=draw(st.text(max_size=8)),
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        shape = draw(
            st.lists(st.one_of(st.integers(-3, 70), st.integers(-(2**62), 2**62)), max_size=4)
        )
        t = req.inputs.add(
            name=draw(st.sampled_from(["x", "image", "a", "b", "y", ""])),
            datatype=draw(st.sampled_from(DATATYPES)),
            shape=shape,
        )
        if raw:
            req.raw_input_contents.append(draw(st.binary(max_size=600)))
        elif draw(st.booleans()):
            field = draw(st.sampled_from(FIELDS))
            values = draw(st.lists(st.integers(0, 300), max_size=80))
            getattr(t.contents, field).extend(
                [bool(v) for v in values] if field == "bool_contents" else values
            )
    if draw(st.booleans()):
        req.outputs.add(name=draw(st.sampled_from(["y", "logits", "zz"])))
    return req.SerializeToString()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=tensors_requests())
def test_random_tensors_never_internal(
    raw_call: grpc.UnaryUnaryMultiCallable, payload: bytes
) -> None:
    assert status_of(raw_call, payload) in ANSWERS


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_and_truncated_bytes_get_an_answer(
    raw_call: grpc.UnaryUnaryMultiCallable, data: st.DataObject
) -> None:
    whole = valid_request().SerializeToString()
    payload = data.draw(
        st.one_of(
            st.binary(max_size=2000),
            st.integers(0, len(whole) - 1).map(lambda n: whole[:n]),
        )
    )
    # Undecodable protobuf fails in grpc itself (UNKNOWN/INTERNAL); the rest is a real answer.
    assert status_of(raw_call, payload) in ANSWERS | {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }


def test_still_correct_after_fuzzing(agent: AgentProcess, model_dir: Path) -> None:
    with grpc.insecure_channel(agent.address) as ch:
        resp = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(valid_request())
    got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(resp.outputs[0].shape)
    sess = ort.InferenceSession(str(model_dir / "mlp.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got, sess.run(None, {"x": np.ones((2, 64), np.float32)})[0])
    assert agent.proc.poll() is None
