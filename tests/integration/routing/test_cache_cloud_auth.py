"""Response cache, cloud fallback and bearer tokens, against a second agent standing in for
the cloud (it checks the bearer token like a real endpoint would).

Both agents hold the pool's control token (what the operator mounts): it opens their control
service and derives the pool-internal credential their hops carry. The inference token opens
inference only; the gateway's cloud token is named by the table (`--cloud-token cloud=FILE`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc

from tests.agentproc import free_port

from .conftest import Agents, make_request, metric, params, route, scrape, stub, table

pytestmark = pytest.mark.integration

TOKEN = (("authorization", "Bearer s3cret"),)
CONTROL = (("authorization", "Bearer control-s3cret"),)


@dataclass
class Setup:
    gateway: str
    cloud: str
    metrics_port: int
    token_file: Path


@pytest.fixture(scope="module")
def setup(identity_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    secrets = tmp_path_factory.mktemp("secrets")
    token_file = secrets / "token"
    token_file.write_text("s3cret\n")
    control_file = secrets / "control"
    control_file.write_text("control-s3cret\n")
    pool = ["--auth-token-file", str(token_file), "--control-token-file", str(control_file)]
    agents = Agents()
    try:
        port = free_port()
        cloud, gw = agents.start_many(
            ["--model", f"ident={identity_model}", "--node-name", "cloud-agent", *pool],
            ["--gateway", "--node-name", "a", "--metrics-port", str(port), *pool,
             "--cloud-token", f"cloud={token_file}"],
        )  # fmt: skip
        yield Setup(gw.address, cloud.address, port, token_file)
    finally:
        agents.stop_all()


def push(s: Setup, t: control_pb2.RoutingTable) -> None:
    channel = grpc.insecure_channel(s.gateway)
    control_pb2_grpc.AgentControlStub(channel).SetRoutingTable(t, metadata=CONTROL)


def test_tokens_guard_every_call_but_health(setup: Setup) -> None:
    s = stub(setup.gateway)
    for md in ((), (("authorization", "Bearer wrong"),)):
        with pytest.raises(grpc.RpcError) as err:
            s.ModelInfer(make_request(), metadata=md)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:  # a hop marker alone proves nothing
        stub(setup.cloud).ModelInfer(make_request(), metadata=(("x-hatswarm-hop", "1"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(setup.gateway))
    assert health.Check(health_pb2.HealthCheckRequest()).status == 1  # SERVING, no token
    control = control_pb2_grpc.AgentControlStub(grpc.insecure_channel(setup.gateway))
    for md, code in (
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (TOKEN, grpc.StatusCode.PERMISSION_DENIED),  # an inference token never opens control
    ):
        with pytest.raises(grpc.RpcError) as err:
            control.NodeStatus(control_pb2.NodeStatusRequest(), metadata=md)
        assert err.value.code() == code


def test_cache_hit_answers_with_the_callers_id(setup: Setup) -> None:
    push(setup, table([route("ident", setup.cloud, version="1", cache_ttl_seconds=60)]))
    s = stub(setup.gateway)
    first = s.ModelInfer(make_request(value=7, request_id="one"), metadata=TOKEN)
    assert params(first)["hatswarm.route"] == "peer"  # forwarded with the peer credential
    hit = s.ModelInfer(make_request(value=7, request_id="two"), metadata=TOKEN)
    assert params(hit) == {"hatswarm.node": "cache", "hatswarm.route": "cache"}
    assert hit.id == "two"
    assert hit.raw_output_contents == first.raw_output_contents
    other = s.ModelInfer(make_request(value=8), metadata=TOKEN)
    assert params(other)["hatswarm.route"] == "peer"
    text = scrape(setup.metrics_port)
    assert metric(text, "hatswarm_cache_hits_total", model="ident") == 1
    assert metric(text, "hatswarm_cache_misses_total", model="ident") == 2
    # a new version in the table invalidates: the same input is computed again
    push(setup, table([route("ident", setup.cloud, cache_ttl_seconds=60)], generation=2))
    again = s.ModelInfer(make_request(value=7), metadata=TOKEN)
    assert params(again)["hatswarm.route"] == "peer"


def _cloud_table(s: Setup, generation: int, max_share: float) -> control_pb2.RoutingTable:
    t = table([route("ident", cloud_fallback=True)], generation=generation)
    t.cloud.CopyFrom(
        control_pb2.CloudFallback(
            endpoint=s.cloud, token_name="cloud", max_share=max_share,
            price_per_1k_usd=2.0,
        )
    )  # fmt: skip
    return t


def test_cloud_fallback_with_token_cost_and_share_cap(setup: Setup) -> None:
    push(setup, _cloud_table(setup, 10, 1.0))
    s = stub(setup.gateway)
    for _ in range(4):
        resp = s.ModelInfer(make_request(), metadata=TOKEN)
        assert params(resp) == {"hatswarm.node": "cloud", "hatswarm.route": "cloud"}
    text = scrape(setup.metrics_port)
    assert metric(text, "hatswarm_cloud_fallback_requests_total", model="ident") == 4
    assert metric(text, "hatswarm_cloud_fallback_cost_usd_total", model="ident") == pytest.approx(
        0.008
    )
    assert metric(text, "hatswarm_route_requests_total", model="ident", route="cloud") == 4
    push(setup, _cloud_table(setup, 11, 0.5))
    codes, details = [], set()
    for _ in range(30):
        try:
            s.ModelInfer(make_request(), metadata=TOKEN)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            codes.append(err.code())
            details.add(err.details() or "")
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert all("share limit" in d for d in details)
    sent = metric(scrape(setup.metrics_port), "hatswarm_cloud_fallback_requests_total")
    assert sent <= 0.5 * (4 + 30 + 4) + 1  # 4 earlier cloud + 4 cache-test requests counted


def test_a_rotated_token_file_takes_effect(setup: Setup) -> None:
    setup.token_file.write_text("rotated-token-longer\n")
    s = stub(setup.gateway)
    with pytest.raises(grpc.RpcError) as err:
        s.ModelInfer(make_request(), metadata=TOKEN)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    new = (("authorization", "Bearer rotated-token-longer"),)
    t = table([route("ident", setup.cloud)], generation=20)
    control_pb2_grpc.AgentControlStub(grpc.insecure_channel(setup.gateway)).SetRoutingTable(
        t, metadata=CONTROL
    )
    resp = s.ModelInfer(make_request(), metadata=new)  # the hop carries the peer credential
    assert params(resp) == {"hatswarm.node": "cloud-agent", "hatswarm.route": "peer"}
    push(setup, _cloud_table(setup, 21, 1.0))  # the named cloud token is re-read too
    resp = s.ModelInfer(make_request(), metadata=new)
    assert params(resp) == {"hatswarm.node": "cloud", "hatswarm.route": "cloud"}
