"""A pushed routing table is checked before it steers anything (routing.table.validate_pushed)."""

from __future__ import annotations

import pytest
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.table import (
    MAX_GENERATION_AHEAD_MS,
    RoutingTableStore,
    TableRefusedError,
    validate_pushed,
)

NOW = 1_700_000_000_000


def table(**kw: object) -> control_pb2.RoutingTable:
    kw.setdefault("generation", NOW)
    return control_pb2.RoutingTable(**kw)  # type: ignore[arg-type]


def route(*addresses: str) -> control_pb2.Route:
    return control_pb2.Route(
        model="m", endpoints=[control_pb2.Endpoint(node=a, address=a, weight=1) for a in addresses]
    )


def member(address: str, node: str = "") -> control_pb2.PoolMember:
    return control_pb2.PoolMember(node=node or address, address=address)


@pytest.mark.parametrize(
    ("pushed", "message"),
    [
        (table(generation=2**64 - 1), "out of bounds"),
        (table(generation=NOW + MAX_GENERATION_AHEAD_MS + 1), "out of bounds"),
        (table(generation=0), "out of bounds"),
        (table(routes=[route("10.0.0.9:8001")]), "10.0.0.9:8001 is not an announced pool member"),
        (
            table(routes=[route("10.0.0.9:8001")], members=[member("10.0.0.9:8001", "pi-2")]),
            "is member 'pi-2', not '10.0.0.9:8001'",
        ),
        (table(members=[member("no-port")]), "is not HOST:PORT"),
        (table(cloud=control_pb2.CloudFallback(token_file="/etc/hostname")), "token_file cannot"),
        (table(cloud=control_pb2.CloudFallback(token_name="other")), "not a token this agent"),
        (table(cloud=control_pb2.CloudFallback(max_share=float("nan"))), "max_share=nan"),
        (table(retries=50), "retries=50 is out of range"),
        (table(policy="Chaos"), "policy 'Chaos'"),
    ],
)
def test_a_bad_table_is_refused_naming_what_is_wrong(
    pushed: control_pb2.RoutingTable, message: str
) -> None:
    with pytest.raises(TableRefusedError, match=message.replace("(", r"\(")):
        validate_pushed(pushed, now_ms=NOW, cloud_tokens={"cloud"})


def test_a_good_table_passes_and_a_refused_one_changes_nothing() -> None:
    good = table(
        routes=[route("10.0.0.5:8001")],
        members=[member("10.0.0.5:8001")],
        cloud=control_pb2.CloudFallback(endpoint="oip.example:443", token_name="cloud"),
        retries=2,
        timeout_ms=2000,
    )
    validate_pushed(good, now_ms=NOW, cloud_tokens={"cloud"})
    store = RoutingTableStore(cloud_tokens={"cloud"})
    with pytest.raises(TableRefusedError):
        store.push(table(generation=2**64 - 1))
    assert store.generation == 0
    # A static table (the agent's own flags) may name a token file: it is configuration.
    static = RoutingTableStore(table(cloud=control_pb2.CloudFallback(token_file="/run/t")))
    assert static.table.cloud.token_file == "/run/t"
