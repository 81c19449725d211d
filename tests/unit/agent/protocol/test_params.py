"""The hatswarm OIP parameters: read (and checked) in one place, written in one place."""

from __future__ import annotations

import pytest
from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import DEPTH_PARAM, NODE_PARAM, ROUTE_PARAM


def _req() -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="m", id="x")


def test_priority_parameter_forms() -> None:
    r = _req()
    assert params.priority(r) == 0
    r.parameters["priority"].uint64_param = 7
    assert params.priority(r) == 7
    r.parameters["priority"].string_param = "3"
    assert params.priority(r) == 3
    r.parameters["priority"].string_param = " 4 "
    assert params.priority(r) == 4
    r.parameters["priority"].int64_param = -2
    assert params.priority(r) == -2
    r.parameters["priority"].bool_param = True
    assert params.priority(r) == 1
    r.parameters["priority"].double_param = 5.0
    assert params.priority(r) == 5


@pytest.mark.parametrize(
    ("kind", "value", "shown"),
    [("string_param", "high", "'high'"), ("double_param", 2.5, "2.5")],
)
def test_a_malformed_priority_is_refused_not_read_as_zero(
    kind: str, value: object, shown: str
) -> None:
    r = _req()
    setattr(r.parameters["priority"], kind, value)
    with pytest.raises(params.ParameterError, match=f"'priority' must be an integer, got {shown}"):
        params.priority(r)


def test_adapter_must_be_a_string() -> None:
    r = _req()
    assert params.adapter(r) == ""
    r.parameters["adapter"].string_param = "lora1"
    assert params.adapter(r) == "lora1"
    r.parameters["adapter"].int64_param = 3
    with pytest.raises(params.ParameterError, match="'adapter' must be a string"):
        params.adapter(r)


def test_answers_say_where_they_ran_and_hops_report_depth() -> None:
    r = pb.ModelInferResponse(model_name="m")
    assert params.route_of(r) == "" and params.answered_by(r, "peer-a") == "peer-a"
    params.tag(r, "node-1", "local")
    assert r.parameters[NODE_PARAM].string_param == "node-1"
    assert r.parameters[ROUTE_PARAM].string_param == "local"
    assert params.route_of(r) == "local" and params.answered_by(r) == "node-1"
    assert params.pop_queue_depth(r) == -1
    params.set_queue_depth(r, 5)
    assert r.parameters[DEPTH_PARAM].int64_param == 5
    assert params.pop_queue_depth(r) == 5 and DEPTH_PARAM not in r.parameters
