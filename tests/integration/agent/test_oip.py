"""The OIP wire API against a real agent process: every status code, typed and raw contents."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_agent.serving.tensors import NUMPY_TO_OIP

pytestmark = pytest.mark.integration


def raw_request(model: str, version: str = "", **arrays: np.ndarray) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version=version, id="req-7")
    for name, arr in arrays.items():
        req.inputs.add(name=name, datatype=NUMPY_TO_OIP[arr.dtype], shape=arr.shape)
        req.raw_input_contents.append(arr.tobytes())
    return req


def output(resp: pb.ModelInferResponse, name: str) -> np.ndarray:
    """Decode one output (raw or typed) from a response."""
    for i, t in enumerate(resp.outputs):
        if t.name == name:
            dtype = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "FP64": np.float64}[
                t.datatype
            ]
            if resp.raw_output_contents:
                return np.frombuffer(resp.raw_output_contents[i], dtype).reshape(t.shape)
            field = {"FP32": "fp32_contents", "INT64": "int64_contents", "FP64": "fp64_contents"}
            return np.array(getattr(t.contents, field[t.datatype]), dtype).reshape(t.shape)
    raise KeyError(name)


def session(model_dir: Path, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"])


def test_server_and_model_metadata(channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "hatswarm-agent"
    assert stub.ModelReady(pb.ModelReadyRequest(name="mlp")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="mlp", version="1")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="mlp", version="9")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="broken")).ready
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="cnn"))
    assert (meta.name, list(meta.versions), meta.platform) == ("cnn", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("image", "UINT8", [-1, 3, 32, 32])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("logits", "FP32", [-1, 10])
    ]


def test_raw_infer_equals_onnxruntime_and_echoes_id(channel: grpc.Channel, model_dir: Path) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    image = np.random.default_rng(3).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    resp = stub.ModelInfer(raw_request("cnn", "1", image=image))
    assert (resp.model_name, resp.model_version, resp.id) == ("cnn", "1", "req-7")
    expected = session(model_dir, "cnn").run(None, {"image": image})[0]
    np.testing.assert_array_equal(output(resp, "logits"), expected)


def test_typed_contents_answer_typed(channel: grpc.Channel, model_dir: Path) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    b = (a * 3 - 4).astype(np.int64)
    req = pb.ModelInferRequest(model_name="two")
    req.inputs.add(name="a", datatype="INT64", shape=[2, 3]).contents.int64_contents.extend(
        a.ravel()
    )
    req.inputs.add(name="b", datatype="INT64", shape=[2, 3]).contents.int64_contents.extend(
        b.ravel()
    )
    req.outputs.add(name="prod")
    resp = stub.ModelInfer(req)
    assert not resp.raw_output_contents
    assert [t.name for t in resp.outputs] == ["prod"]
    expected = session(model_dir, "two").run(["prod"], {"a": a, "b": b})[0]
    np.testing.assert_array_equal(output(resp, "prod"), expected)


def test_fp16_raw(channel: grpc.Channel, model_dir: Path) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    x = np.linspace(-3, 3, 16, dtype=np.float16).reshape(2, 8)
    resp = stub.ModelInfer(raw_request("fp16", x=x))
    got = output(resp, "y")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, session(model_dir, "fp16").run(None, {"x": x})[0])


def test_concurrent_requests_are_batched_with_unbatched_results(
    channel: grpc.Channel, model_dir: Path
) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    sess = session(model_dir, "mlp")
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 64)).astype(np.float32) for _ in range(48)]
    futures: list[Future[pb.ModelInferResponse]] = [
        stub.ModelInfer.future(raw_request("mlp", x=x)) for x in xs
    ]
    for x, fut in zip(xs, futures, strict=True):
        np.testing.assert_array_equal(output(fut.result(), "y"), sess.run(None, {"x": x})[0])
    status = control_pb2_grpc.AgentControlStub(channel).NodeStatus(control_pb2.NodeStatusRequest())
    mlp = next(m for m in status.models if m.name == "mlp")
    assert mlp.inference_count >= sum(x.shape[0] for x in xs)
    assert mlp.request_success >= len(xs)


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("request_", "code", "detail"),
    [
        (raw_request("nope", x=np.zeros((1, 64), np.float32)), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
        (raw_request("mlp", "7", x=np.zeros((1, 64), np.float32)), grpc.StatusCode.NOT_FOUND, "unknown version '7'"),
        (raw_request("broken", x=np.zeros((1, 64), np.float32)), grpc.StatusCode.UNAVAILABLE, "cannot load ONNX model"),
        (raw_request("mlp", z=np.zeros((1, 64), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "unexpected input 'z'"),
        (raw_request("mlp", x=np.zeros((1, 64), np.float64)), grpc.StatusCode.INVALID_ARGUMENT, "'x': datatype FP64, expected FP32"),
        (raw_request("mlp", x=np.zeros((1, 63), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "'x': shape [1, 63], expected [-1, 64]"),
        (raw_request("two", a=np.zeros((2, 3), np.int64)), grpc.StatusCode.INVALID_ARGUMENT, "missing inputs ['b']"),
    ],
)  # fmt: skip
def test_bad_requests_get_their_status_code(
    channel: grpc.Channel, request_: pb.ModelInferRequest, code: grpc.StatusCode, detail: str
) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_)
    assert info.value.code() == code
    assert detail in info.value.details()


def test_wrong_byte_count_and_mixed_contents_are_invalid(channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    req = raw_request("mlp", x=np.zeros((1, 64), np.float32))
    req.raw_input_contents[0] = req.raw_input_contents[0][:-4]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x': 252 raw bytes, expected 256" in info.value.details()
    req = raw_request("mlp", x=np.zeros((1, 64), np.float32))
    req.inputs[0].contents.fp32_contents.extend([0.0] * 64)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "both raw_input_contents and typed contents" in info.value.details()


def test_oversized_request_is_resource_exhausted(channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    big = np.zeros((5000, 64), np.float32)  # 1.28 MB > the agent's 1 MiB limit
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(raw_request("mlp", x=big))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.ServerLive(pb.ServerLiveRequest()).live
