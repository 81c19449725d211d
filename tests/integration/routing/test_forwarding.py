"""Forwarding: a gateway sends everything to peers; local first; hop marker; canary split."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from .conftest import Agents, control, make_request, params, route, stub, table

pytestmark = pytest.mark.integration


def test_gateway_forwards_with_node_and_route_and_own_id(
    agents: Agents, identity_model: Path
) -> None:
    b = agents.start(["--model", f"ident={identity_model}", "--node-name", "b"])
    a = agents.start(["--gateway", "--node-name", "a", "--peer", f"ident={b.address}"])
    resp = stub(a.address).ModelInfer(make_request(value=3.0, request_id="abc"))
    assert resp.id == "abc"
    assert params(resp) == {"hatswarm.node": "b", "hatswarm.route": "peer"}
    assert np.frombuffer(resp.raw_output_contents[0], np.float32).tolist() == [3.0] * 4
    direct = stub(b.address).ModelInfer(make_request())
    assert params(direct) == {"hatswarm.node": "b", "hatswarm.route": "local"}


def test_local_model_is_served_locally_even_with_peers(
    agents: Agents, identity_model: Path
) -> None:
    b = agents.start(["--model", f"ident={identity_model}", "--node-name", "b"])
    a = agents.start(
        ["--model", f"ident={identity_model}", "--node-name", "a", "--peer", f"ident={b.address}"]
    )
    routes = {
        params(stub(a.address).ModelInfer(make_request()))["hatswarm.route"] for _ in range(20)
    }
    assert routes == {"local"}


def test_a_hop_is_never_forwarded_again(agents: Agents, identity_model: Path) -> None:
    b = agents.start(["--model", f"ident={identity_model}", "--node-name", "b"])
    a = agents.start(["--gateway", "--node-name", "a", "--peer", f"ident={b.address}"])
    with pytest.raises(grpc.RpcError) as err:
        stub(a.address).ModelInfer(make_request(), metadata=(("x-hatswarm-hop", "1"),))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_model_is_not_found_and_bad_input_passes_through(
    agents: Agents, identity_model: Path
) -> None:
    b = agents.start(["--model", f"ident={identity_model}", "--node-name", "b"])
    a = agents.start(["--gateway", "--node-name", "a", "--peer", f"ident={b.address}"])
    with pytest.raises(grpc.RpcError) as err:
        stub(a.address).ModelInfer(make_request(model="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    bad = make_request()
    bad.inputs[0].shape[:] = [1, 5]
    with pytest.raises(grpc.RpcError) as err:
        stub(a.address).ModelInfer(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape" in (err.value.details() or "")


def test_static_table_file_and_canary_split_by_version_weight(
    agents: Agents, identity_model: Path, tmp_path: Path
) -> None:
    b = agents.start(["--model", f"ident:1={identity_model}", "--node-name", "b"])
    c = agents.start(["--model", f"ident:2={identity_model}", "--node-name", "c"])
    spec = {
        "generation": 1,
        "routes": [
            {"model": "ident", "version": "1", "weight": 3,
             "endpoints": [{"node": "b", "address": b.address, "weight": 1}]},
            {"model": "ident", "version": "2", "weight": 1,
             "endpoints": [{"node": "c", "address": c.address, "weight": 1}]},
        ],
    }  # fmt: skip
    path = tmp_path / "table.json"
    path.write_text(json.dumps(spec))
    a = agents.start(["--gateway", "--node-name", "a", "--routing-table", str(path)])
    s = stub(a.address)
    versions = [s.ModelInfer(make_request()).model_version for _ in range(200)]
    share = versions.count("1") / len(versions)
    assert set(versions) == {"1", "2"}
    assert 0.6 < share < 0.9  # 75 % expected
    assert {s.ModelInfer(make_request(version="2")).model_version for _ in range(10)} == {"2"}


def test_pushed_table_replaces_static_peers(agents: Agents, identity_model: Path) -> None:
    b = agents.start(["--model", f"ident={identity_model}", "--node-name", "b"])
    c = agents.start(["--model", f"ident={identity_model}", "--node-name", "c"])
    a = agents.start(["--gateway", "--node-name", "a", "--peer", f"ident={b.address}"])
    assert params(stub(a.address).ModelInfer(make_request()))["hatswarm.node"] == "b"
    control(a.address).SetRoutingTable(table([route("ident", c.address)], generation=5))
    nodes = {params(stub(a.address).ModelInfer(make_request()))["hatswarm.node"] for _ in range(5)}
    assert nodes == {"c"}


def test_deadline_travels_with_the_hop(agents: Agents, identity_model: Path) -> None:
    b = agents.start(
        ["--model", f"ident={identity_model}", "--node-name", "b", "--backend", "simulated",
         "--accelerator", "hailo8l", "--option", "fps_batch1=2", "--option", "fps_batch8=2",
         "--max-batch-size", "1"]
    )  # fmt: skip
    a = agents.start(["--gateway", "--node-name", "a", "--peer", f"ident={b.address}"])
    with pytest.raises(grpc.RpcError) as err:
        stub(a.address).ModelInfer(make_request(), timeout=0.2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
