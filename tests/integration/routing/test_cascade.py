"""Confidence cascade with real agents: a small classifier on the edge, a bigger model in the
pool, and an agent standing in for the cloud. Unsure answers come back from the bigger tier
with `hatswarm.tier` saying so; sure ones from the edge; the cloud's share cap holds."""

from __future__ import annotations

import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from agentproc import AgentProcess, _save, free_port, start_agent
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

SURE = [1.0, 0.0]  # logits [4, 0]: top probability 0.98
UNSURE = [0.5, 0.5]  # logits [2, 2]: top probability 0.5


def build_classifier(path: Path, scale: float) -> Path:
    """probs[N,2] = Softmax(x[N,2] @ (scale * I)): sure for one-hot x, unsure for flat x."""
    w = (np.eye(2) * scale).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"]), helper.make_node("Softmax", ["z"], ["probs"], axis=-1)],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w, "W")],
    )  # fmt: skip
    return _save(graph, path)


@dataclass
class Pool:
    edge: AgentProcess
    big: AgentProcess
    cloud: AgentProcess
    metrics_port: int


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cascade-models")
    return {
        "small": build_classifier(d / "small.onnx", 4.0),
        "big": build_classifier(d / "big.onnx", 0.5),  # its own answers: tell them apart
        "cloud": build_classifier(d / "cloud.onnx", 9.0),
    }


def start_pool(models: dict[str, Path]) -> Pool:
    started: list[AgentProcess] = []
    try:
        big = start_agent(["--model", f"big={models['big']}", "--node-name", "hailo8-big"])
        started.append(big)
        cloud = start_agent(["--model", f"small={models['cloud']}", "--node-name", "cloud"])
        started.append(cloud)
        port = free_port()
        edge = start_agent(
            ["--model", f"small={models['small']}", "--node-name", "edge",
             "--metrics-port", str(port)]
        )  # fmt: skip
        started.append(edge)
    except BaseException:
        for a in started:
            a.stop(timeout=5)
        raise
    return Pool(edge, big, cloud, port)


@pytest.fixture
def pool(models: dict[str, Path]) -> Iterator[Pool]:
    p = start_pool(models)
    yield p
    for a in (p.edge, p.big, p.cloud):
        a.stop(timeout=5)


def push(p: Pool, **escalation: Any) -> None:
    table = control_pb2.RoutingTable(
        generation=1,
        queue_limit=64,
        retries=2,
        timeout_ms=10000,
        routes=[
            control_pb2.Route(
                model="small",
                endpoints=[control_pb2.Endpoint(node="edge", address=p.edge.address, weight=1)],
                escalation_output="probs",
                escalation_threshold=0.9,
                **escalation,
            ),
            control_pb2.Route(
                model="big",
                endpoints=[control_pb2.Endpoint(node="hailo8-big", address=p.big.address, weight=1)],
            ),
        ],
        cloud=control_pb2.CloudFallback(endpoint=p.cloud.address, max_share=0.25),
        members=[
            control_pb2.PoolMember(node="edge", address=p.edge.address),
            control_pb2.PoolMember(node="hailo8-big", address=p.big.address),
        ],
    )  # fmt: skip
    with grpc.insecure_channel(p.edge.address) as ch:
        control_pb2_grpc.AgentControlStub(ch).SetRoutingTable(table)


def ask(address: str, x: list[float]) -> pb.ModelInferResponse:
    req = pb.ModelInferRequest(model_name="small")
    req.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    req.raw_input_contents.append(np.asarray([x], np.float32).tobytes())
    with grpc.insecure_channel(address) as ch:
        response: pb.ModelInferResponse = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(
            req, timeout=10
        )
    return response


def params(r: pb.ModelInferResponse) -> dict[str, str]:
    return {k: v.string_param for k, v in r.parameters.items()}


def probs(r: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(r.raw_output_contents[0], np.float32)


def escalations(p: Pool, target: str) -> float:
    url = f"http://127.0.0.1:{p.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    key = f'hatswarm_escalations_total{{model="small",target="{target}"}} '
    line = next((ln for ln in text.splitlines() if ln.startswith(key)), None)
    return float(line.split()[-1]) if line else 0.0


def test_unsure_answers_come_from_the_bigger_model_sure_ones_from_the_edge(pool: Pool) -> None:
    push(pool, escalation_model="big")
    sure = ask(pool.edge.address, SURE)
    assert params(sure)["hatswarm.tier"] == "edge"
    assert params(sure)["hatswarm.node"] == "edge"
    assert probs(sure).max() > 0.9
    unsure = ask(pool.edge.address, UNSURE)
    assert params(unsure)["hatswarm.tier"] == "escalated-model:big"
    assert params(unsure)["hatswarm.node"] == "hailo8-big"
    assert unsure.model_name == "big"
    assert escalations(pool, "big") == 1.0


def test_the_edge_answer_stands_when_the_bigger_model_is_gone(pool: Pool) -> None:
    push(pool, escalation_model="big")
    pool.big.stop(timeout=5)
    r = ask(pool.edge.address, UNSURE)
    assert params(r)["hatswarm.tier"] == "edge"
    assert probs(r).max() < 0.9


def test_cloud_escalation_keeps_within_the_cloud_share(pool: Pool) -> None:
    push(pool, escalation_cloud=True)
    tiers = Counter(params(ask(pool.edge.address, UNSURE))["hatswarm.tier"] for _ in range(20))
    assert tiers["cloud"] > 0
    assert tiers["cloud"] <= 0.25 * 20  # max_share of the requests the router saw
    assert tiers["cloud"] + tiers["edge"] == 20
    assert escalations(pool, "cloud") == tiers["cloud"]
    assert params(ask(pool.edge.address, SURE))["hatswarm.tier"] == "edge"
