"""Confidence cascade: is an edge answer sure enough, or should a bigger tier answer? Pure.

The seed article's adaptive offloading: the small model on the node answers the common, easy
requests; only those it is unsure of go on to a bigger model in the pool (one only Hailo-8
nodes carry, say) or to the cloud. "Unsure" is the top class probability of one named output
under the route's threshold. An output that is not already a probability distribution (values
outside [0, 1], or rows not summing to 1) is read as logits and softmaxed; a single value per
row is a sigmoid probability p, whose confidence is max(p, 1 - p). A batched request escalates
when any of its rows is unsure. escalation.py does the sending.
"""

from __future__ import annotations

import math

import numpy as np

from hatswarm_agent.protocol.datatypes import CONTENTS_FIELD, OIP_TO_NUMPY
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import TIER_MODEL_PREFIX, TIER_PARAM

# Rows of probabilities sum to 1 within this (float32 softmax outputs are not exact).
SUM_TOLERANCE = 1e-3
_NUMERIC = {k for k in OIP_TO_NUMPY if k not in ("BYTES", "BOOL")}


def tier_of_model(model: str) -> str:
    return f"{TIER_MODEL_PREFIX}{model}"


def output_values(response: pb.ModelInferResponse, name: str) -> np.ndarray | None:
    """Output `name` of a response as float64 (raw or typed contents); None when absent."""
    raw = len(response.raw_output_contents) > 0
    for i, tensor in enumerate(response.outputs):
        if tensor.name != name:
            continue
        if tensor.datatype not in _NUMERIC:
            return None
        shape = tuple(tensor.shape)
        if raw:
            if i >= len(response.raw_output_contents):
                return None
            dtype = OIP_TO_NUMPY[tensor.datatype]
            data = response.raw_output_contents[i]
            if tensor.datatype == "BF16":  # the upper 16 bits of a float32
                bits = np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16
                arr = bits.view(np.float32)
            else:
                arr = np.frombuffer(data, dtype=dtype)
        else:
            arr = np.asarray(getattr(tensor.contents, CONTENTS_FIELD[tensor.datatype]))
        if arr.size != math.prod(shape):
            return None
        return arr.astype(np.float64).reshape(shape)
    return None


def is_distribution(rows: np.ndarray) -> bool:
    """Every value in [0, 1] and every row summing to ~1."""
    if rows.size == 0 or rows.min() < 0.0 or rows.max() > 1.0:
        return False
    return bool(np.all(np.abs(rows.sum(axis=-1) - 1.0) <= SUM_TOLERANCE))


def softmax(rows: np.ndarray) -> np.ndarray:
    shifted = rows - rows.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def top_probability(values: np.ndarray) -> float:
    """The least confident row's top probability (classes on the last axis)."""
    if values.size == 0:
        return 1.0
    rows = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
    if not np.all(np.isfinite(rows)):
        return 0.0  # NaN or inf: not an answer to trust
    if rows.shape[-1] == 1:
        p = rows[:, 0]
        if p.min() < 0.0 or p.max() > 1.0:
            p = 1.0 / (1.0 + np.exp(-p))  # a logit
        return float(np.maximum(p, 1.0 - p).min())
    probs = rows if is_distribution(rows) else softmax(rows)
    return float(probs.max(axis=-1).min())


def confidence(response: pb.ModelInferResponse, output: str) -> float | None:
    """The response's confidence on `output`; None when it does not carry that output."""
    values = output_values(response, output)
    return None if values is None else top_probability(values)


def unsure(response: pb.ModelInferResponse, output: str, threshold: float) -> bool:
    """Should this answer go to the bigger tier? (Never when the output is missing.)"""
    c = confidence(response, output)
    return c is not None and c < threshold


def set_tier(response: pb.ModelInferResponse, tier: str) -> pb.ModelInferResponse:
    response.parameters[TIER_PARAM].string_param = tier
    return response
