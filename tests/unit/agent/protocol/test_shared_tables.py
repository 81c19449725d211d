"""Each table both sides share has one definition; these pin every copy that must agree with it.

Routing defaults: protocol.defaults against static tables, the dispatcher's config, the agent's
flags and the InferencePool API (and its CRD); adapter slots against the operator's planner. Datatypes: protocol.datatypes against the
EdgeModel API and its CRD. Wire names: protocol.wire against the generated service descriptor
and the literal values clients already rely on.
"""

from __future__ import annotations

from typing import Any, get_args

from hatswarm_agent.cli import build_parser
from hatswarm_agent.protocol import wire
from hatswarm_agent.protocol.datatypes import CONTENTS_FIELD, OIP_TO_NUMPY
from hatswarm_agent.protocol.defaults import (
    ADAPTER_SLOTS,
    ROUTE_QUEUE_LIMIT,
    ROUTE_RETRIES,
    ROUTE_TIMEOUT_MS,
)
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.routing.config import DispatchConfig
from hatswarm_agent.routing.table import TABLE_DEFAULTS, table_from_dict
from hatswarm_operator.api.crd import edgemodel_crd, inferencepool_crd
from hatswarm_operator.api.edgemodel import OipDatatype
from hatswarm_operator.api.inferencepool import Routing
from hatswarm_operator.core import adapterplan


def _find(node: Any, key: str) -> list[Any]:
    """Every value under `key` anywhere in a nested schema."""
    found: list[Any] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found.extend(_find(v, key))
    elif isinstance(node, list):
        for v in node:
            found.extend(_find(v, key))
    return found


def test_routing_defaults_are_defined_once() -> None:
    assert (ROUTE_QUEUE_LIMIT, ROUTE_RETRIES, ROUTE_TIMEOUT_MS) == (64, 2, 5000)
    expected = {"queue_limit": 64, "retries": 2, "timeout_ms": 5000}
    assert expected == TABLE_DEFAULTS
    table = table_from_dict({})
    assert (table.queue_limit, table.retries, table.timeout_ms) == (64, 2, 5000)
    config = DispatchConfig()
    assert (config.retries, config.timeout_ms) == (ROUTE_RETRIES, ROUTE_TIMEOUT_MS)
    flags = build_parser().parse_args([])
    assert (flags.retries, flags.timeout_ms) == (ROUTE_RETRIES, ROUTE_TIMEOUT_MS)
    api = Routing()
    assert {
        "queue_limit": api.queue_limit,
        "retries": api.retries,
        "timeout_ms": api.timeout_ms,
    } == (expected)
    (routing,) = _find(inferencepool_crd(), "routing")
    props = routing["properties"]
    assert props["queueLimit"]["default"] == ROUTE_QUEUE_LIMIT
    assert props["retries"]["default"] == ROUTE_RETRIES
    assert props["timeoutMs"]["default"] == ROUTE_TIMEOUT_MS


def test_adapter_slots_default_is_the_agents() -> None:
    assert ADAPTER_SLOTS == 4
    assert adapterplan.DEFAULT_SLOTS == ADAPTER_SLOTS  # the operator plans with the agent's


def test_the_api_datatypes_are_the_protocols() -> None:
    names = list(OIP_TO_NUMPY)
    assert list(get_args(OipDatatype)) == names
    enums = [d["enum"] for d in _find(edgemodel_crd(), "datatype") if "enum" in d]
    assert enums and all(e == names for e in enums)
    assert set(CONTENTS_FIELD) == set(names) - {"FP16", "BF16"}  # those two travel raw only


def test_wire_names() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert f"/{service.full_name}/{service.methods_by_name['ModelInfer'].name}" == wire.INFER_METHOD
    assert wire.HOP_METADATA == ((wire.HOP_KEY, "1"),) == (("x-hatswarm-hop", "1"),)
    assert (wire.NODE_PARAM, wire.ROUTE_PARAM, wire.TIER_PARAM, wire.DEPTH_PARAM) == (
        "hatswarm.node",
        "hatswarm.route",
        "hatswarm.tier",
        "hatswarm.queue_depth",
    )
    assert (wire.ADAPTER_PARAM, wire.PRIORITY_PARAM) == ("adapter", "priority")
    routes = (wire.ROUTE_LOCAL, wire.ROUTE_PEER, wire.ROUTE_CLOUD, wire.ROUTE_CACHE)
    assert routes == ("local", "peer", "cloud", "cache")
