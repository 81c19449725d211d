"""Confidence cascade with real agents: a small classifier on the edge, a bigger model in the
pool, and an agent standing in for the cloud. Unsure answers come back from the bigger tier
with `hatswarm.tier` saying so; sure ones from the edge; the cloud's share cap holds."""

from __future__ import annotations

import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.agentproc import AgentProcess, free_port, start_agents
from tests.onnxmodels import build_classifier

pytestmark = pytest.mark.integration

SURE = [1.0, 0.0]  # logits [4, 0]: top probability 0.98
UNSURE = [0.5, 0.5]  # logits [2, 2]: top probability 0.5


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


class Tiers:
    """The bigger model and the cloud stand-in, shared by the module: they only answer what the
    edge forwards, and the edge (fresh per test) holds all of the cascade's state. One that a
    test stopped is started again for the next test."""

    SERVES = {"big": ("big", "hailo8-big"), "cloud": ("small", "cloud")}  # model, node name

    def __init__(self, models: dict[str, Path]) -> None:
        self.models = models
        self.running: dict[str, AgentProcess] = {}

    def missing(self) -> list[str]:
        return [
            t
            for t in self.SERVES
            if t not in self.running or self.running[t].proc.poll() is not None
        ]

    def args(self, tier: str) -> list[str]:
        model, node = self.SERVES[tier]
        return ["--model", f"{model}={self.models[tier]}", "--node-name", node]

    def stop(self) -> None:
        for agent in self.running.values():
            agent.stop(timeout=5)


@pytest.fixture(scope="module")
def tiers(models: dict[str, Path]) -> Iterator[Tiers]:
    t = Tiers(models)
    yield t
    t.stop()


@pytest.fixture
def pool(models: dict[str, Path], tiers: Tiers) -> Iterator[Pool]:
    """A fresh edge; the tiers behind it started (again) alongside when not running."""
    port = free_port()
    missing = tiers.missing()
    *revived, edge = start_agents(
        [*(tiers.args(t) for t in missing),
         ["--model", f"small={models['small']}", "--node-name", "edge", "--metrics-port", str(port)]]
    )  # fmt: skip
    tiers.running.update(zip(missing, revived, strict=True))
    yield Pool(edge, tiers.running["big"], tiers.running["cloud"], port)
    edge.stop(timeout=5)


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
