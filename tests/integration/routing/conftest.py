"""Routing tests: real agents on loopback, an identity model, hatswarm's own OIP stubs.

(tritonclient and hatswarm's OIP stubs cannot share a process: the tritonclient load of the
failover test runs in a child process, see loadgen.py.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.agentproc import AgentProcess, start_agent, start_agents
from tests.onnxmodels import build_identity


@pytest.fixture(scope="session")
def identity_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_identity(tmp_path_factory.mktemp("models") / "ident.onnx")


class Agents:
    """Starts agents and stops every one of them at teardown."""

    def __init__(self) -> None:
        self.started: list[AgentProcess] = []

    def start(self, args: Sequence[str], **kw: Any) -> AgentProcess:
        agent = start_agent(list(args), **kw)
        self.started.append(agent)
        return agent

    def start_many(self, *arg_lists: Sequence[str]) -> list[AgentProcess]:
        """Agents that do not need each other's address, started side by side."""
        started = start_agents(arg_lists)
        self.started.extend(started)
        return started

    def stop_all(self) -> None:
        for agent in self.started:
            agent.stop(timeout=5)


@pytest.fixture
def agents() -> Iterator[Agents]:
    a = Agents()
    try:
        yield a
    finally:
        a.stop_all()


def make_request(
    model: str = "ident", value: float = 1.0, version: str = "", request_id: str = "r"
) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(np.full(4, value, dtype=np.float32).tobytes())
    return req


def with_priority(req: pb.ModelInferRequest, priority: int) -> pb.ModelInferRequest:
    req.parameters["priority"].int64_param = priority
    return req


def stub(address: str, credentials: grpc.ChannelCredentials | None = None) -> Any:
    channel = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    return pb_grpc.GRPCInferenceServiceStub(channel)


def control(address: str) -> Any:
    return control_pb2_grpc.AgentControlStub(grpc.insecure_channel(address))


def params(response: pb.ModelInferResponse) -> dict[str, str]:
    return {k: v.string_param for k, v in response.parameters.items()}


def table(
    routes: Sequence[control_pb2.Route], generation: int = 1, **kw: Any
) -> control_pb2.RoutingTable:
    kw.setdefault("queue_limit", 64)
    kw.setdefault("retries", 2)
    kw.setdefault("timeout_ms", 10000)
    kw.setdefault("members", members_of(routes))
    return control_pb2.RoutingTable(generation=generation, routes=list(routes), **kw)


def members_of(routes: Sequence[control_pb2.Route]) -> list[control_pb2.PoolMember]:
    """Every endpoint of `routes` announced as a pool member, as the operator does."""
    seen = {ep.address: ep.node for r in routes for ep in r.endpoints if ep.address}
    return [control_pb2.PoolMember(node=node, address=a) for a, node in sorted(seen.items())]


def route(model: str, *addresses: str, version: str = "", **kw: Any) -> control_pb2.Route:
    return control_pb2.Route(
        model=model,
        version=version,
        endpoints=[control_pb2.Endpoint(node=a, address=a, weight=1.0) for a in addresses],
        **kw,
    )


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
        return text


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
