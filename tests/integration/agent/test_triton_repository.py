"""Triton's own tools against an agent serving a Triton model repository.

The repository is laid out as tritonserver wants it (`NAME/VERSION/model.onnx`, a config.pbtxt
with batching, version policy, instance groups, parameters and a field hatswarm ignores) plus
a flat `NAME.onnx` and a model that cannot load. tritonclient's `get_model_config` and
`get_model_repository_index` run unmodified in a child process (tests/tritonjobs.py);
perf_analyzer itself drives the agent when `make tools` fetched it.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

from tests import tritonjobs
from tests.agentproc import AgentProcess, start_agent, start_agents
from tests.externaltools import missing
from tests.onnxmodels import build_cnn, build_mlp, build_two_inputs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

MLP_CONFIG = """
name: "mlp"
backend: "onnxruntime"
max_batch_size: 4
version_policy: { all { } }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 default_queue_policy { max_queue_size: 32 } }
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "intra_op_threads" value: { string_value: "1" } }
# Triton-only settings hatswarm has no use for are ignored:
model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value: {
  data_type: TYPE_FP32 dims: [ 64 ] zero_data: true } } } ]
"""


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlp/{1,2} (config: all versions, batch 4), cnn/{1,3} (no config: latest), flat.onnx."""
    repo = tmp_path_factory.mktemp("triton-repo")
    for version in ("1", "2"):
        (repo / "mlp" / version).mkdir(parents=True)
        build_mlp(repo / "mlp" / version / "model.onnx")
    (repo / "mlp" / "config.pbtxt").write_text(MLP_CONFIG)
    for version in ("1", "3"):
        (repo / "cnn" / version).mkdir(parents=True)
        build_cnn(repo / "cnn" / version / "model.onnx")
    build_two_inputs(repo / "flat.onnx")
    return repo


@pytest.fixture(scope="module")
def broken_repository(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository plus `broken/1/model.onnx`, which is not ONNX."""
    repo = tmp_path_factory.mktemp("triton-repo-broken")
    for entry in repository.iterdir():
        (repo / entry.name).symlink_to(entry)
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    return repo


@pytest.fixture(scope="module")
def agents(repository: Path, broken_repository: Path) -> Iterator[dict[str, AgentProcess]]:
    """onnx (strict readiness, with the broken model), relaxed (same, strict off), simulated."""
    onnx, relaxed, simulated = start_agents(
        [
            ["--model-dir", str(broken_repository)],
            ["--model-dir", str(broken_repository), "--strict-readiness=false"],
            ["--model-dir", str(repository), "--backend", "simulated", "--accelerator", "hailo8l"],
        ]
    )
    yield {"onnx": onnx, "relaxed": relaxed, "simulated": simulated}
    for agent in (onnx, relaxed, simulated):
        agent.stop()


def test_model_config_from_metadata_and_config_pbtxt(agents: dict[str, AgentProcess]) -> None:
    configs = tritonjobs.run(
        tritonjobs.model_configs, agents["onnx"].address, ["mlp", "cnn", "flat", "nope", "broken"]
    )
    mlp = configs["mlp"]
    assert mlp["name"] == "mlp" and mlp["platform"] == "onnxruntime_onnx"
    assert mlp["max_batch_size"] == 4  # from config.pbtxt, batch dim left out of dims
    assert mlp["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["64"]}]
    assert mlp["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": ["10"]}]
    assert mlp["dynamic_batching"] == {
        "max_queue_delay_microseconds": "500",
        "default_queue_policy": {"max_queue_size": 32},
    }
    assert mlp["instance_group"] == [{"name": "mlp", "count": 2, "kind": "KIND_CPU"}]
    assert mlp["parameters"]["intra_op_threads"] == {"string_value": "1"}
    cnn = configs["cnn"]  # no config.pbtxt: the agent's defaults (--max-batch-size 8)
    assert cnn["max_batch_size"] == 8
    assert cnn["input"] == [{"name": "image", "data_type": "TYPE_UINT8", "dims": ["3", "32", "32"]}]
    flat = configs["flat"]  # fixed shapes: no batching, full dims
    assert "max_batch_size" not in flat and "dynamic_batching" not in flat
    assert flat["input"][0] == {"name": "a", "data_type": "TYPE_INT64", "dims": ["2", "3"]}
    assert configs["nope"]["error"] == "StatusCode.NOT_FOUND"
    assert "nope" in configs["nope"]["message"]
    assert configs["broken"]["error"] == "StatusCode.UNAVAILABLE"


def test_model_config_simulated_npu(agents: dict[str, AgentProcess]) -> None:
    configs = tritonjobs.run(tritonjobs.model_configs, agents["simulated"].address, ["mlp"])
    mlp = configs["mlp"]
    assert mlp["platform"] == "simulated_npu" and mlp["backend"] == "simulated"
    assert mlp["max_batch_size"] == 4
    # The NPU runs one batch at a time whatever instance_group asked for.
    assert mlp["instance_group"] == [{"name": "mlp", "count": 1, "kind": "KIND_MODEL"}]


def test_repository_index_and_strict_readiness(agents: dict[str, AgentProcess]) -> None:
    strict = tritonjobs.run(tritonjobs.repository_index, agents["onnx"].address)
    index = {(m["name"], m["version"]): m for m in strict["index"]}
    # version_policy all: mlp 1 and 2; no config: latest only (cnn 3, not 1).
    assert sorted(index) == [
        ("broken", "1"),
        ("cnn", "3"),
        ("flat", "1"),
        ("mlp", "1"),
        ("mlp", "2"),
    ]
    assert {m["state"] for k, m in index.items() if k[0] != "broken"} == {"READY"}
    assert index["broken", "1"]["state"] == "UNAVAILABLE"
    assert index["broken", "1"]["reason"]
    assert strict["server_ready"] is False  # a requested model failed to load
    relaxed = tritonjobs.run(tritonjobs.repository_index, agents["relaxed"].address)
    assert relaxed["server_ready"] is True
    simulated = tritonjobs.run(tritonjobs.repository_index, agents["simulated"].address)
    assert simulated["server_ready"] is True and len(simulated["index"]) == 4


def test_ready_filter_and_readiness_after_unload(agents: dict[str, AgentProcess]) -> None:
    """`ready: true` leaves failed models out; unloading the failed model on purpose makes a
    strict server ready (it is no longer requested)."""
    with grpc.insecure_channel(agents["onnx"].address) as channel:
        oip = pb_grpc.GRPCInferenceServiceStub(channel)
        ready = oip.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
        assert "broken" not in {m.name for m in ready.models} and len(ready.models) == 4
        assert not oip.ServerReady(pb.ServerReadyRequest()).ready
        control = control_pb2_grpc.AgentControlStub(channel)
        control.UnloadModel(control_pb2.UnloadModelRequest(name="broken"))
        assert oip.ServerReady(pb.ServerReadyRequest()).ready


def perf_analyzer() -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fetch_tools.py"), "perf_analyzer"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        missing("perf_analyzer", f"make tools; {proc.stderr.strip()[-300:]}")
    binary = proc.stdout.strip()
    check = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        missing("perf_analyzer", f"make tools (needs Debian libb64-0d): {check.stderr[-300:]}")
    return binary


def test_perf_analyzer_drives_an_agent(repository: Path, tmp_path: Path) -> None:
    """Triton's perf_analyzer reads the model's config and metadata, then measures the agent
    at two concurrencies, batch 2 (within the config's max_batch_size 4)."""
    binary = perf_analyzer()
    with start_agent(["--model-dir", str(repository)]) as agent:
        report = tmp_path / "perf.csv"
        proc = subprocess.run(
            [
                binary, "-m", "mlp", "-x", "2", "-i", "grpc", "-u", agent.address, "-b", "2",
                "--concurrency-range", "1:2", "--measurement-mode", "count_windows",
                "--measurement-request-count", "100", "-s", "80", "-f", str(report),
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = list(csv.DictReader(report.open()))
    assert sorted(row["Concurrency"] for row in rows) == ["1", "2"]
    assert all(float(row["Inferences/Second"]) > 0 for row in rows)
