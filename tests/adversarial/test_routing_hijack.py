"""Attacks 3 and 4: steering a model's traffic (and the pool's token) to an attacker.

Before issue 16: `SetRoutingTable(generation=2**64-1)` pointing a model at an attacker's
endpoint made every agent send that model's inputs and the pool's bearer token there, and the
table stayed in force (the operator ignored the generation agents reported); a table's
`cloud.token_file` read any one-line file on the node and sent it as a bearer token to the
endpoint named in the same table. `Recorder` plays the attacker's endpoint (and the cloud).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.manifests import parse_object
from hatswarm_operator.cli.demo import ready_nodes
from hatswarm_operator.local.pool import LocalPool
from hatswarm_operator.local.processes import bundled_manifests, default_nodes

from tests.adversarial.conftest import (
    Recorder,
    bearer,
    code_of,
    control,
    mlp_request,
    oip,
    private_file,
    start_recorder,
)
from tests.agentproc import start_agent

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def endpoint(address: str) -> control_pb2.Endpoint:
    return control_pb2.Endpoint(node=address, address=address, weight=1.0)


def table(generation: int, *routes: control_pb2.Route, **kw: object) -> control_pb2.RoutingTable:
    return control_pb2.RoutingTable(
        generation=generation, routes=list(routes), retries=0, timeout_ms=5000, **kw
    )


def test_a_table_from_the_far_future_is_refused() -> None:
    with start_agent(["--gateway"]) as agent:
        stub = control(agent.address)
        assert code_of(lambda: stub.SetRoutingTable(table(2**64 - 1), timeout=10)) == INVALID
        assert stub.NodeStatus(control_pb2.NodeStatusRequest()).routing_generation == 0
        assert stub.SetRoutingTable(table(5), timeout=10).generation == 5  # a sane one lands


def test_an_endpoint_nobody_announced_receives_nothing(recorder: Recorder, tmp_path: Path) -> None:
    (tmp_path / "clients").write_text("kiosk-token\n")
    with start_agent(["--gateway", "--auth-token-file", str(tmp_path / "clients")]) as agent:
        hijack = table(10, control_pb2.Route(model="mlp", endpoints=[endpoint(recorder.address)]))
        push = control(agent.address).SetRoutingTable
        assert code_of(lambda: push(hijack, metadata=bearer("kiosk-token"), timeout=10)) == INVALID
        code = code_of(
            lambda: oip(agent.address).ModelInfer(
                mlp_request(), metadata=bearer("kiosk-token"), timeout=10
            )
        )
        assert code != grpc.StatusCode.OK
    assert recorder.calls == []  # before issue 16: the inputs and the kiosk's token


def test_the_clients_token_never_leaves_the_pool(tmp_path: Path) -> None:
    """A member peer gets the pool-internal credential, the cloud its own token: neither ever
    sees the client's token or the control token."""
    from hatswarm_agent.protocol.auth import PEER_KEY  # (imported here: the other attacks in
    # this module replay against agents that predate it)

    peer, cloud = start_recorder(), start_recorder()
    clients = private_file(tmp_path / "clients", "kiosk-token\n")
    operator = private_file(tmp_path / "control", "operator-token\n")
    cloud_token = private_file(tmp_path / "cloud", "cloud-token\n")
    try:
        with start_agent(
            ["--gateway", "--auth-token-file", str(clients), "--control-token-file",
             str(operator), "--cloud-token", f"cloud={cloud_token}"]
        ) as agent:  # fmt: skip
            push = control(agent.address).SetRoutingTable
            to_peer = table(
                10,
                control_pb2.Route(model="mlp", endpoints=[endpoint(peer.address)]),
                control_pb2.Route(model="big", cloud_fallback=True),
                members=[control_pb2.PoolMember(node=peer.address, address=peer.address)],
                cloud=control_pb2.CloudFallback(
                    endpoint=cloud.address, token_name="cloud", max_share=1.0
                ),
            )
            push(to_peer, metadata=bearer("operator-token"), timeout=10)
            stub = oip(agent.address)
            for model in ("mlp", "big"):
                stub.ModelInfer(mlp_request(model), metadata=bearer("kiosk-token"), timeout=10)
    finally:
        peer.stop()
        cloud.stop()
    assert peer.calls and cloud.calls
    for rec in (peer, cloud):
        seen = rec.metadata_values()
        assert not {v for v in seen if "kiosk-token" in v or "operator-token" in v}, rec.calls
    assert PEER_KEY in peer.metadata_keys()  # a hop proves membership with its own credential
    assert PEER_KEY not in cloud.metadata_keys()
    assert "Bearer cloud-token" in cloud.metadata_values()


def test_a_cloud_token_file_cannot_come_from_a_table(recorder: Recorder, tmp_path: Path) -> None:
    secret = private_file(tmp_path / "node" / "root-token", "s3cret-one-line\n")
    with start_agent(["--gateway"]) as agent:
        hijack = table(
            10,
            control_pb2.Route(model="mlp", cloud_fallback=True),
            cloud=control_pb2.CloudFallback(
                endpoint=recorder.address, token_file=str(secret), max_share=1.0
            ),
        )
        push = control(agent.address).SetRoutingTable
        with pytest.raises(grpc.RpcError) as err:
            push(hijack, timeout=10)
        assert err.value.code() == INVALID and "token_file" in (err.value.details() or "")
        code_of(lambda: oip(agent.address).ModelInfer(mlp_request(), timeout=10))
    assert not [v for v in recorder.metadata_values() if "s3cret" in v]


async def test_the_operator_replaces_a_table_it_did_not_push(tmp_path: Path) -> None:
    state = tmp_path / "up"
    pool_doc, model_doc = bundled_manifests(state)
    pool, model = parse_object(pool_doc, "bundled"), parse_object(model_doc, "bundled")
    assert isinstance(pool, InferencePool) and isinstance(model, EdgeModel)
    nodes = default_nodes(2, dict(pool.spec.node_selector))
    async with LocalPool(pool, [model], nodes, state) as local:
        assert await local.wait(lambda s: ready_nodes(s, "shufflenet"), within=90)
        token_file = state / "secrets" / "hatswarm-control-local" / "token"
        md = bearer(token_file.read_text().strip()) if token_file.exists() else ()
        victim = local.agents["pi-01"].address
        stub = control(victim)

        def generation() -> int:
            return int(
                stub.NodeStatus(control_pb2.NodeStatusRequest(), metadata=md).routing_generation
            )

        ours = await asyncio.to_thread(generation)
        assert ours > 0
        foreign = ours + 1_000_000  # newer than anything this operator pushed (and in bounds)
        pushed = await asyncio.to_thread(
            lambda: stub.SetRoutingTable(table(foreign), metadata=md, timeout=10).generation
        )
        assert pushed == foreign

        def overtaken() -> bool:
            flagged = any(e.reason == "RoutingTableMismatch" for _, e in local.sink.events)
            return flagged and generation() > foreign

        deadline = asyncio.get_running_loop().time() + 30
        while not await asyncio.to_thread(overtaken):
            assert asyncio.get_running_loop().time() < deadline, "the foreign table stayed"
            await asyncio.sleep(0.3)
