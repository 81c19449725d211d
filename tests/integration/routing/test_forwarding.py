"""Forwarding: a gateway sends everything to peers; local first; hop marker; canary split;
static tables replaced by pushed ones. One module-wide pool: b (ident v1), c (ident v2) and a
gateway a whose static table splits ident 3:1 between them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from .conftest import AgentProcess, Agents, control, make_request, params, route, stub, table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool(
    identity_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AgentProcess]]:
    agents = Agents()
    try:
        b, c = agents.start_many(
            ["--model", f"ident:1={identity_model}", "--node-name", "b"],
            ["--model", f"ident:2={identity_model}", "--node-name", "c"],
        )
        spec = {
            "generation": 1,
            "routes": [
                {"model": "ident", "version": "1", "weight": 3,
                 "endpoints": [{"node": "b", "address": b.address, "weight": 1}]},
                {"model": "ident", "version": "2", "weight": 1,
                 "endpoints": [{"node": "c", "address": c.address, "weight": 1}]},
            ],
        }  # fmt: skip
        path = tmp_path_factory.mktemp("table") / "table.json"
        path.write_text(json.dumps(spec))
        a = agents.start(["--gateway", "--node-name", "a", "--routing-table", str(path)])
        yield {"a": a, "b": b, "c": c}
    finally:
        agents.stop_all()


def test_gateway_forwards_with_node_route_and_the_callers_id(
    pool: dict[str, AgentProcess],
) -> None:
    resp = stub(pool["a"].address).ModelInfer(make_request(value=3.0, request_id="abc"))
    assert resp.id == "abc"
    p = params(resp)
    assert p["hatswarm.route"] == "peer"
    assert p["hatswarm.node"] == {"1": "b", "2": "c"}[resp.model_version]
    assert np.frombuffer(resp.raw_output_contents[0], np.float32).tolist() == [3.0] * 4
    direct = stub(pool["b"].address).ModelInfer(make_request())
    assert params(direct) == {"hatswarm.node": "b", "hatswarm.route": "local"}


def test_canary_split_by_version_weight(pool: dict[str, AgentProcess]) -> None:
    s = stub(pool["a"].address)
    versions = [s.ModelInfer(make_request()).model_version for _ in range(200)]
    assert set(versions) == {"1", "2"}
    assert 0.6 < versions.count("1") / len(versions) < 0.9  # 75 % expected
    asked = {s.ModelInfer(make_request(version="2")).model_version for _ in range(10)}
    assert asked == {"2"}


def test_a_hop_is_never_forwarded_again(pool: dict[str, AgentProcess]) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub(pool["a"].address).ModelInfer(make_request(), metadata=(("x-hatswarm-hop", "1"),))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_model_is_not_found_and_bad_input_passes_through(
    pool: dict[str, AgentProcess],
) -> None:
    s = stub(pool["a"].address)
    with pytest.raises(grpc.RpcError) as err:
        s.ModelInfer(make_request(model="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    bad = make_request()
    bad.inputs[0].shape[:] = [1, 5]
    with pytest.raises(grpc.RpcError) as err:
        s.ModelInfer(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape" in (err.value.details() or "")


def test_an_agent_with_the_model_serves_it_locally(pool: dict[str, AgentProcess]) -> None:
    b, c = pool["b"], pool["c"]
    control(b.address).SetRoutingTable(table([route("ident", c.address, b.address)]))
    s = stub(b.address)
    routes = {params(s.ModelInfer(make_request(version="1")))["hatswarm.route"] for _ in range(20)}
    assert routes == {"local"}
    # the version b lacks goes to the peer that has it
    other = s.ModelInfer(make_request(version="2"))
    assert params(other) == {"hatswarm.node": "c", "hatswarm.route": "peer"}


def test_a_pushed_table_replaces_the_static_one(pool: dict[str, AgentProcess]) -> None:
    a, c = pool["a"], pool["c"]
    control(a.address).SetRoutingTable(table([route("ident", c.address)], generation=5))
    nodes = {params(stub(a.address).ModelInfer(make_request()))["hatswarm.node"] for _ in range(10)}
    assert nodes == {"c"}


def test_an_empty_push_keeps_the_static_routes_of_other_models(
    pool: dict[str, AgentProcess], agents: Agents, identity_model: Path
) -> None:
    """A gateway's --peer routes survive a push that does not mention their model, and its
    --timeout-ms is the budget while the pushed table sets none."""
    c = pool["c"]
    g = agents.start(
        ["--gateway", "--node-name", "g", "--peer", f"ident={c.address}", "--timeout-ms", "1234"]
    )
    control(g.address).SetRoutingTable(table([], generation=3, timeout_ms=0))
    resp = stub(g.address).ModelInfer(make_request())
    assert params(resp)["hatswarm.node"] == "c"
    control(g.address).SetRoutingTable(table([route("other", c.address)], generation=4))
    assert params(stub(g.address).ModelInfer(make_request()))["hatswarm.node"] == "c"
