"""LoRA adapters in a real agent process: LoadModel with adapters, OIP parameter `adapter`.

The base model and the adapter files come from tests/onnxmodels.py (adapters are
written with onnxruntime's own AdapterFormat); every answer is compared with a direct
onnxruntime run of the same adapter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.agentproc import AgentProcess, start_agent
from tests.onnxmodels import IN, OUT, build_lora_base, direct_run, lora_adapter

pytestmark = pytest.mark.integration

READY = control_pb2.MODEL_STATE_READY


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("lora-artifacts")
    out = {"base": build_lora_base(d / "base.onnx")}
    for i, name in enumerate("abcd"):
        out[name] = lora_adapter(d / f"{name}.onnx_adapter", seed=i)
    return out


def artifact(files: dict[str, Path], name: str, digest: str = "") -> control_pb2.AdapterArtifact:
    path = files[name]
    return control_pb2.AdapterArtifact(
        name=name, uri=f"file://{path}", sha256=digest or sha256(path)
    )


def roots(files: dict[str, Path]) -> list[str]:
    """The agent's --allow-file-root for the test's model folder(s)."""
    folders = sorted({str(p.parent) for p in files.values()})
    return [arg for folder in folders for arg in ("--allow-file-root", folder)]


def load_request(
    files: dict[str, Path], adapters: list[control_pb2.AdapterArtifact], **options: str
) -> control_pb2.LoadModelRequest:
    base = files["base"]
    return control_pb2.LoadModelRequest(
        name="lm",
        version="1",
        uri=str(base),
        sha256=sha256(base),
        adapters=adapters,
        options={"workers": "1", **options},
    )


@pytest.fixture(scope="module")
def agent(
    files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    state = tmp_path_factory.mktemp("lora-state")
    proc = start_agent(["--state-dir", str(state), "--max-queue-delay-us", "20000", *roots(files)])
    yield proc
    proc.stop()


@pytest.fixture
def channel(agent: AgentProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(agent.address) as ch:
        yield ch


def request(x: np.ndarray, adapter: str | None = None) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="lm", model_version="1")
    req.inputs.add(name="x", datatype="FP32", shape=x.shape)
    req.raw_input_contents.append(x.tobytes())
    if adapter is not None:
        req.parameters["adapter"].string_param = adapter
    return req


def y_of(response: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(-1, OUT)


def infer(channel: grpc.Channel, x: np.ndarray, adapter: str | None = None) -> np.ndarray:
    return y_of(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request(x, adapter)))


def status(channel: grpc.Channel) -> control_pb2.ModelStatus:
    stub = control_pb2_grpc.AgentControlStub(channel)
    models = [m for m in stub.NodeStatus(control_pb2.NodeStatusRequest()).models if m.name == "lm"]
    assert len(models) == 1
    return models[0]


def expect(files: dict[str, Path], x: np.ndarray, adapter: str | None) -> np.ndarray:
    return direct_run(files["base"], x, files[adapter] if adapter else None)


def test_adapters_change_the_answer_exactly_like_onnxruntime(
    channel: grpc.Channel, files: dict[str, Path]
) -> None:
    control = control_pb2_grpc.AgentControlStub(channel)
    loaded = control.LoadModel(load_request(files, [artifact(files, "a"), artifact(files, "b")]))
    assert loaded.state == READY and loaded.reason == ""
    assert list(loaded.adapters) == ["a", "b"]
    assert list(status(channel).adapters) == ["a", "b"]

    x = np.random.default_rng(1).standard_normal((3, IN)).astype(np.float32)
    base = infer(channel, x)
    np.testing.assert_allclose(base, expect(files, x, None), rtol=1e-5, atol=1e-5)
    assert np.array_equal(infer(channel, x, ""), base)  # an empty adapter is the base model
    for name in "ab":
        y = infer(channel, x, name)
        np.testing.assert_allclose(y, expect(files, x, name), rtol=1e-5, atol=1e-5)
        assert not np.allclose(y, base)

    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request(x, "x"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "adapter 'x' is not known for model 'lm' version '1'" in (info.value.details() or "")
    wrong = request(x)
    wrong.parameters["adapter"].int64_param = 3
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(wrong)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tampered_adapter_is_refused_and_the_base_keeps_serving(
    channel: grpc.Channel, files: dict[str, Path]
) -> None:
    control = control_pb2_grpc.AgentControlStub(channel)
    before = status(channel)
    tampered = artifact(files, "c", digest=sha256(files["d"]))  # c's bytes, d's digest
    loaded = control.LoadModel(load_request(files, [artifact(files, "a"), tampered]))
    assert loaded.state == READY
    assert list(loaded.adapters) == ["a"]
    assert "adapter 'c' refused: digest mismatch" in loaded.reason
    assert loaded.loaded_at_unix_ms == before.loaded_at_unix_ms  # the base was not reloaded

    x = np.ones((2, IN), np.float32)
    np.testing.assert_allclose(infer(channel, x), expect(files, x, None), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(infer(channel, x, "a"), expect(files, x, "a"), rtol=1e-5, atol=1e-5)
    with pytest.raises(grpc.RpcError) as info:
        infer(channel, x, "c")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        infer(channel, x, "b")  # dropped from the set by this LoadModel
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # The same set with c's right digest admits it, still without reloading the base.
    fixed = control.LoadModel(load_request(files, [artifact(files, "a"), artifact(files, "c")]))
    assert list(fixed.adapters) == ["a", "c"] and fixed.reason == ""
    assert fixed.loaded_at_unix_ms == before.loaded_at_unix_ms
    np.testing.assert_allclose(infer(channel, x, "c"), expect(files, x, "c"), rtol=1e-5, atol=1e-5)
    again = control.LoadModel(load_request(files, [artifact(files, "a"), artifact(files, "c")]))
    assert list(again.adapters) == ["a", "c"]  # idempotent: nothing reloads
    assert again.loaded_at_unix_ms == before.loaded_at_unix_ms

    with pytest.raises(grpc.RpcError) as info:
        control.LoadModel(load_request(files, [artifact(files, "a"), artifact(files, "a")]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_two_slots_serve_three_adapters_by_reloading_from_cache(
    channel: grpc.Channel, files: dict[str, Path]
) -> None:
    control = control_pb2_grpc.AgentControlStub(channel)
    adapters = [artifact(files, n) for n in "abc"]
    loaded = control.LoadModel(load_request(files, adapters, adapter_slots="2"))
    assert loaded.state == READY and list(loaded.adapters) == ["a", "b", "c"]
    x = np.random.default_rng(2).standard_normal((1, IN)).astype(np.float32)
    # a, b, c, a, ... with two slots: every use past the second evicts and reloads.
    for name in "abcabccba":
        y = infer(channel, x, name)
        np.testing.assert_allclose(y, expect(files, x, name), rtol=1e-5, atol=1e-5)


def test_concurrent_requests_of_two_adapters_each_get_their_own_answer(
    channel: grpc.Channel, files: dict[str, Path]
) -> None:
    control = control_pb2_grpc.AgentControlStub(channel)
    adapters = [artifact(files, n) for n in "ab"]
    assert control.LoadModel(load_request(files, adapters)).state == READY
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    rng = np.random.default_rng(3)
    plan = ["a", "b", None, "a", "a", "b", "b", None] * 6
    xs = [rng.standard_normal((1 + i % 2, IN)).astype(np.float32) for i in range(len(plan))]
    futures = [stub.ModelInfer.future(request(x, a)) for x, a in zip(xs, plan, strict=True)]
    for x, adapter, future in zip(xs, plan, futures, strict=True):
        y = y_of(future.result(timeout=30))
        np.testing.assert_allclose(y, expect(files, x, adapter), rtol=1e-5, atol=1e-5)
    s = status(channel)
    assert s.inference_count > s.execution_count  # batching did happen (never across adapters)


def test_adapters_survive_a_restart_from_disk(files: dict[str, Path], tmp_path: Path) -> None:
    state = tmp_path / "state"
    x = np.ones((1, IN), np.float32)
    with (
        start_agent(["--state-dir", str(state), *roots(files)]) as agent,
        grpc.insecure_channel(agent.address) as ch,
    ):
        control = control_pb2_grpc.AgentControlStub(ch)
        control.LoadModel(load_request(files, [artifact(files, "d")]))
    with (
        start_agent(["--state-dir", str(state), *roots(files)]) as agent,
        grpc.insecure_channel(agent.address) as ch,
    ):
        assert list(status(ch).adapters) == ["d"]
        np.testing.assert_allclose(infer(ch, x, "d"), expect(files, x, "d"), rtol=1e-5, atol=1e-5)
