"""Readers and writers of the OIP parameters hatswarm defines (names in wire.py), one each.

A malformed parameter raises ParameterError, which the servicer answers as INVALID_ARGUMENT
(serving/errors.py): a caller who sent `priority: "high"` learns so instead of being shed as 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hatswarm_agent.protocol.wire import (
    ADAPTER_PARAM,
    DEPTH_PARAM,
    KV_USE_PARAM,
    NODE_PARAM,
    PRIORITY_PARAM,
    ROUTE_PARAM,
    SLOTS_PARAM,
)

if TYPE_CHECKING:  # no stubs at run time: see wire.py
    from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb


class ParameterError(ValueError):
    """A request parameter of the wrong kind: the caller's mistake (INVALID_ARGUMENT)."""


def adapter(request: pb.ModelInferRequest) -> str:
    """The LoRA adapter a request names ("" for the base model); it must be a string."""
    params = request.parameters
    if ADAPTER_PARAM not in params:
        return ""
    param = params[ADAPTER_PARAM]
    if param.WhichOneof("parameter_choice") != "string_param":
        raise ParameterError(f"request parameter '{ADAPTER_PARAM}' must be a string")
    return param.string_param


def priority(request: pb.ModelInferRequest) -> int:
    """The `priority` parameter (an integer, or a string of one; higher = more important).

    0 when absent; anything else (a non-numeric string, a float) is the caller's mistake
    and raises ParameterError rather than silently becoming 0.
    """
    params = request.parameters
    if PRIORITY_PARAM not in params:
        return 0
    p = params[PRIORITY_PARAM]
    kind = p.WhichOneof("parameter_choice")
    if kind == "int64_param":
        return int(p.int64_param)
    if kind == "uint64_param":
        return int(p.uint64_param)
    if kind == "bool_param":
        return int(p.bool_param)
    if kind == "double_param" and p.double_param.is_integer():
        return int(p.double_param)
    if kind == "string_param":
        text = p.string_param.strip()
        try:
            return int(text)
        except ValueError:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise ParameterError(
                f"request parameter '{PRIORITY_PARAM}' must be an integer, got {shown!r}"
            ) from None
    shown = repr(p.double_param) if kind == "double_param" else f"a {kind or 'empty'} value"
    raise ParameterError(f"request parameter '{PRIORITY_PARAM}' must be an integer, got {shown}")


def tag(response: pb.ModelInferResponse, node: str, route: str) -> pb.ModelInferResponse:
    """Say where an answer ran: `hatswarm.node` and `hatswarm.route`."""
    params = response.parameters
    params[NODE_PARAM].string_param = node
    params[ROUTE_PARAM].string_param = route
    return response


def answered_by(response: pb.ModelInferResponse, default: str = "") -> str:
    """The node an answer says it ran on (`default` when it does not say)."""
    params = response.parameters
    return params[NODE_PARAM].string_param if NODE_PARAM in params else default


def route_of(response: pb.ModelInferResponse) -> str:
    """The route an answer says it took ("" when it does not say)."""
    params = response.parameters
    return params[ROUTE_PARAM].string_param if ROUTE_PARAM in params else ""


def set_queue_depth(response: pb.ModelInferResponse, depth: int) -> None:
    """A hop's answer reports the serving node's queue depth to the forwarder."""
    response.parameters[DEPTH_PARAM].int64_param = depth


def pop_queue_depth(response: pb.ModelInferResponse) -> int:
    """Take the reported queue depth off an answer (-1 when none): it is for this hop only."""
    params = response.parameters
    if DEPTH_PARAM not in params:
        return -1
    depth = int(params[DEPTH_PARAM].int64_param)
    del params[DEPTH_PARAM]
    return depth


def set_generation_load(response: pb.ModelInferResponse, slots: int, kv_use: float) -> None:
    """A hop's generation answer reports the serving model's sequence slots and KV cache use."""
    response.parameters[SLOTS_PARAM].int64_param = slots
    response.parameters[KV_USE_PARAM].double_param = kv_use


def pop_generation_load(response: pb.ModelInferResponse) -> tuple[int, float]:
    """Take (sequence slots, KV cache use) off an answer ((0, -1.0) when it has none)."""
    params = response.parameters
    slots = int(params[SLOTS_PARAM].int64_param) if SLOTS_PARAM in params else 0
    kv_use = float(params[KV_USE_PARAM].double_param) if KV_USE_PARAM in params else -1.0
    for key in (SLOTS_PARAM, KV_USE_PARAM):
        if key in params:
            del params[key]
    return slots, kv_use
