"""Confidence cascade decisions (cascade.py): probabilities or logits, raw or typed outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import TIER_PARAM
from hatswarm_agent.routing.cascade import (
    confidence,
    is_distribution,
    set_tier,
    tier_of_model,
    top_probability,
    unsure,
)


def response(values: np.ndarray, raw: bool = True, name: str = "probs") -> pb.ModelInferResponse:
    r = pb.ModelInferResponse(model_name="m")
    t = r.outputs.add(name=name, datatype="FP32", shape=values.shape)
    if raw:
        r.raw_output_contents.append(values.astype(np.float32).tobytes())
    else:
        t.contents.fp32_contents.extend(values.reshape(-1).tolist())
    return r


def test_probabilities_are_read_as_they_are() -> None:
    assert top_probability(np.array([[0.2, 0.7, 0.1]])) == pytest.approx(0.7)
    assert is_distribution(np.array([[0.2, 0.7, 0.1]]))


def test_logits_get_a_softmax() -> None:
    logits = np.array([[2.0, 0.0, 0.0]])
    expected = np.exp(2) / (np.exp(2) + 2)
    assert not is_distribution(logits)
    assert top_probability(logits) == pytest.approx(expected)
    # In [0, 1] but not summing to one: scores, not probabilities.
    assert top_probability(np.array([[0.9, 0.9]])) == pytest.approx(0.5)


def test_a_single_value_is_a_sigmoid_probability_or_logit() -> None:
    assert top_probability(np.array([[0.2]])) == pytest.approx(0.8)
    assert top_probability(np.array([[3.0]])) == pytest.approx(1 / (1 + np.exp(-3)))


def test_the_least_sure_row_of_a_batch_decides_and_nan_is_never_sure() -> None:
    assert top_probability(np.array([[0.99, 0.01], [0.55, 0.45]])) == pytest.approx(0.55)
    assert top_probability(np.array([[np.nan, 1.0]])) == 0.0


@pytest.mark.parametrize("raw", [True, False])
def test_confidence_from_a_response_raw_or_typed(raw: bool) -> None:
    r = response(np.array([[0.1, 0.6, 0.3]]), raw)
    assert confidence(r, "probs") == pytest.approx(0.6)
    assert unsure(r, "probs", 0.8) and not unsure(r, "probs", 0.5)
    assert confidence(r, "other") is None and not unsure(r, "other", 0.99)


def test_tier_parameter() -> None:
    r = set_tier(pb.ModelInferResponse(), tier_of_model("big"))
    assert r.parameters[TIER_PARAM].string_param == "escalated-model:big"
