"""Attack 2: any file on a node could be read remotely.

The chain as it ran before issue 16: `LoadModel(file:///any/path)` copied a 0600 secret into
the artifact cache (0444 in a 0755 folder: world-readable on disk), the FAILED reason gave its
sha256, and a second "model" whose ONNX external data named that digest (same folder, so
onnxruntime's path check passed) loaded READY and returned the secret's bytes. Each step is
replayed here; the chain now fails at its first, and each later step is closed on its own.
"""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import control_pb2
from onnx import TensorProto, helper, numpy_helper

from tests.adversarial.conftest import (
    Files,
    code_of,
    control,
    oip,
    private_file,
    sha256_of,
)
from tests.agentproc import start_agent
from tests.onnxmodels import save_graph as _save

pytestmark = pytest.mark.integration

SECRET = "pool-token=s3cret-0123456789\n-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA\n"


def cached_files(state: Path) -> list[Path]:
    root = state / "artifacts"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_reading_a_node_file_fails_at_the_first_step(tmp_path: Path) -> None:
    state = tmp_path / "state"
    secret = private_file(tmp_path / "node" / "pool-token", SECRET)
    digest = sha256_of(secret)
    with start_agent(["--state-dir", str(state)]) as agent:
        stub = control(agent.address)
        for request in (
            control_pb2.LoadModelRequest(name="x", uri=secret.as_uri()),
            control_pb2.LoadModelRequest(name="x", uri=str(secret)),
            control_pb2.LoadModelRequest(name="x", uri=secret.as_uri(), sha256=digest),
        ):
            # Before issue 16: a FAILED reply naming the digest, the file already in the cache.
            with pytest.raises(grpc.RpcError) as err:
                stub.LoadModel(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "allowed file roots" in (err.value.details() or "")
            assert digest not in (err.value.details() or "")
        status = stub.NodeStatus(control_pb2.NodeStatusRequest(), timeout=10)
        assert status.artifact_cache_bytes == 0 and not status.models
        assert digest not in str(status)
    assert cached_files(state) == []


def test_a_symlink_or_dotdot_cannot_leave_an_allowed_root(tmp_path: Path) -> None:
    secret = private_file(tmp_path / "node" / "pool-token", SECRET)
    models = tmp_path / "models"
    models.mkdir()
    (models / "innocent.onnx").symlink_to(secret)
    state = tmp_path / "state"
    with start_agent(["--state-dir", str(state), "--allow-file-root", str(models)]) as agent:
        for uri in (
            (models / "innocent.onnx").as_uri(),
            f"file://{models}/../node/pool-token",
            str(models / ".." / "node" / "pool-token"),
        ):
            request = control_pb2.LoadModelRequest(name="x", uri=uri, sha256=sha256_of(secret))
            call = control(agent.address).LoadModel
            assert code_of(lambda: call(request, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT  # noqa: B023
    assert cached_files(state) == []


def test_the_cache_is_private_to_the_agent(tmp_path: Path, mlp: Path) -> None:
    state = tmp_path / "state"
    with start_agent(["--state-dir", str(state), "--model", f"mlp={mlp}"]):
        files = cached_files(state)
        assert files, "the command-line model is cached"
        for folder in {state / "artifacts", *(f.parent for f in files)}:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        for f in files:
            mode = stat.S_IMODE(f.stat().st_mode)
            assert mode & 0o077 == 0, f"{f} is {oct(mode)}: readable by others"


def external_data_thief(path: Path, location: str, size: int) -> Path:
    """y = x + w, where w (float32[size/4]) is ONNX external data at `location`."""
    n = size // 4
    w = numpy_helper.from_array(np.zeros(n, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(n * 4))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "thief",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        [w],
    )
    return _save(graph, path)


def test_a_model_cannot_read_another_cached_file_as_external_data(tmp_path: Path) -> None:
    """The last step on its own: a verified artifact in the cache (here, another model's file)
    is not reachable from a second model's external data, even by its exact digest."""
    secret = private_file(tmp_path / "models" / "weights.bin", "TENANT-A-WEIGHTS")  # 16 bytes
    digest = sha256_of(secret)
    thief = external_data_thief(tmp_path / "models" / "thief.onnx", digest, 16)
    state = tmp_path / "state"
    with start_agent(
        ["--state-dir", str(state), "--model", f"secret={secret}", "--model", f"thief={thief}"]
    ) as agent:
        status = control(agent.address).NodeStatus(control_pb2.NodeStatusRequest(), timeout=10)
        models = {m.name: m for m in status.models}
        assert models["thief"].state == control_pb2.MODEL_STATE_FAILED, models["thief"]
        req = oip(agent.address)
        from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb

        infer = pb.ModelInferRequest(model_name="thief")
        infer.inputs.add(name="x", datatype="FP32", shape=[4])
        infer.raw_input_contents.append(np.zeros(4, np.float32).tobytes())
        # Before issue 16 this answered with the other file's bytes.
        assert code_of(lambda: req.ModelInfer(infer, timeout=10)) == grpc.StatusCode.UNAVAILABLE


def test_unverified_content_is_never_named_and_leaves_nothing(
    tmp_path: Path, http_files: Files
) -> None:
    uri, actual = http_files.add("/m.onnx", b"not what was published")
    state = tmp_path / "state"
    with start_agent(["--state-dir", str(state)]) as agent:
        stub = control(agent.address)
        reply = stub.LoadModel(
            control_pb2.LoadModelRequest(name="m", uri=uri, sha256="b" * 64), timeout=10
        )
        assert reply.state == control_pb2.MODEL_STATE_FAILED
        assert "digest mismatch" in reply.reason and actual not in reply.reason
        status = stub.NodeStatus(control_pb2.NodeStatusRequest(), timeout=10)
        assert actual not in str(status)
        assert status.artifact_cache_bytes == 0
    assert cached_files(state) == []  # nor a partial download in tmp/
