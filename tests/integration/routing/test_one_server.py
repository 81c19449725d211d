"""The pool answers as one server: readiness and metadata through any agent, and no agent
answering before it can route.

A Triton/KServe client behind the pool's Service reaches whichever agent the Service picks:
ModelReady, ModelMetadata and ModelConfig must not depend on it, and an agent that has no routing table
yet must say "not ready" (health) and "try again" (UNAVAILABLE), never "no such model".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb

from .conftest import AgentProcess, Agents, control, make_request, params, route, stub, table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool(identity_model: Path) -> Iterator[dict[str, AgentProcess]]:
    agents = Agents()
    try:
        b = agents.start(["--model", f"ident={identity_model}", "--node-name", "b"])
        c = agents.start(["--model", f"ident={identity_model}", "--node-name", "c"])
        a = agents.start(["--node-name", "a"])
        r = route("ident", b.address, c.address)
        for ep, name in zip(r.endpoints, "bc", strict=True):
            ep.node = name
        for agent in (a, b, c):
            control(agent.address).SetRoutingTable(table([r]))
        yield {"a": a, "b": b, "c": c}
    finally:
        agents.stop_all()


def test_model_ready_and_metadata_are_the_same_through_every_agent(
    pool: dict[str, AgentProcess],
) -> None:
    answers = []
    for name, agent in pool.items():
        s = stub(agent.address)
        ready, call = s.ModelReady.with_call(pb.ModelReadyRequest(name="ident"))
        meta = s.ModelMetadata(pb.ModelMetadataRequest(name="ident"))
        # Triton's ModelConfig too: perf_analyzer asks it first, through the pool's Service.
        config, config_call = s.ModelConfig.with_call(pb.ModelConfigRequest(name="ident"))
        node = dict(call.initial_metadata()).get("x-hatswarm-node")
        assert node in ({"b", "c"} if name == "a" else {name})  # who has it (or would serve)
        config_node = dict(config_call.initial_metadata()).get("x-hatswarm-node")
        assert config_node in ({"b", "c"} if name == "a" else {name})
        answers.append(
            (
                ready.ready,
                meta.SerializeToString(deterministic=True),
                config.SerializeToString(deterministic=True),
            )
        )
        unknown = s.ModelReady(pb.ModelReadyRequest(name="nope"))
        assert not unknown.ready
        for rpc, request in (
            (s.ModelMetadata, pb.ModelMetadataRequest(name="nope")),
            (s.ModelConfig, pb.ModelConfigRequest(name="nope")),
        ):
            with pytest.raises(grpc.RpcError) as err:
                rpc(request)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert answers[0][0] is True
    assert len(set(answers)) == 1, "an agent answered differently"


def test_a_peer_asked_on_a_clients_behalf_answers_for_itself_only(
    pool: dict[str, AgentProcess],
) -> None:
    hop = (("x-hatswarm-hop", "1"),)
    s = stub(pool["a"].address)
    assert not s.ModelReady(pb.ModelReadyRequest(name="ident"), metadata=hop).ready
    with pytest.raises(grpc.RpcError) as err:
        s.ModelConfig(pb.ModelConfigRequest(name="ident"), metadata=hop)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
    return int(reply.status)


def test_a_pool_agent_is_not_serving_until_its_table_arrives_and_keeps_it(
    pool: dict[str, AgentProcess], agents: Agents, tmp_path: Path
) -> None:
    args = ["--node-name", "e", "--await-routing-table", "--state-dir", str(tmp_path / "e")]
    e = agents.start(args)
    assert _health(e.address) == health_pb2.HealthCheckResponse.NOT_SERVING
    # ...yet alive: a liveness probe must not restart it while the control plane is away
    assert _health(e.address, "hatswarm.liveness") == health_pb2.HealthCheckResponse.SERVING
    assert not stub(e.address).ServerReady(pb.ServerReadyRequest()).ready
    with pytest.raises(grpc.RpcError) as err:
        stub(e.address).ModelInfer(make_request())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # retryable, not NOT_FOUND
    assert "routing table has not arrived" in (err.value.details() or "")
    b, c = pool["b"], pool["c"]
    control(e.address).SetRoutingTable(table([route("ident", b.address, c.address)], 7))
    deadline = time.monotonic() + 10
    while _health(e.address) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "never turned SERVING after its table"
        time.sleep(0.05)
    assert params(stub(e.address).ModelInfer(make_request()))["hatswarm.route"] == "peer"
    e.stop()
    again = agents.start(args)  # restarted: routes by the table it kept, at once
    assert _health(again.address) == health_pb2.HealthCheckResponse.SERVING
    assert params(stub(again.address).ModelInfer(make_request()))["hatswarm.route"] == "peer"


def test_a_megabyte_model_name_gets_its_status_not_resource_exhausted(
    pool: dict[str, AgentProcess],
) -> None:
    """The status message echoes the name: cut short, it still fits the caller's header limit."""
    name = "m" * (1 << 20)
    for agent in (pool["a"], pool["b"]):
        with pytest.raises(grpc.RpcError) as err:
            stub(agent.address).ModelInfer(make_request(model=name))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "truncated" in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:
            stub(agent.address).ModelMetadata(pb.ModelMetadataRequest(name=name))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_malformed_priority_is_invalid_argument(pool: dict[str, AgentProcess]) -> None:
    request = make_request()
    request.parameters["priority"].string_param = "high"
    with pytest.raises(grpc.RpcError) as err:
        stub(pool["a"].address).ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'priority' must be an integer, got 'high'" in (err.value.details() or "")
