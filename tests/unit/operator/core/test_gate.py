"""The validation gate's comparison: allclose semantics and messages precise enough to act on."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hatswarm_operator.api.edgemodel import ValidationGate
from hatswarm_operator.core.gate import (
    Gate,
    Sample,
    SampleRun,
    Tensor,
    evaluate,
    gate_from_spec,
    input_tensors,
    tensor_array,
)
from hypothesis import given, settings
from hypothesis import strategies as st

X = Tensor("x", "FP32", (1, 2), (0.5, 1.5))
PROBS = Tensor("probabilities", "FP32", (1, 4), (0.1, 0.2, 0.3, 0.4))
SAMPLE = Sample(inputs=(X,), expected=(PROBS,))
GATE = Gate((SAMPLE,), absolute_tolerance=0.01, relative_tolerance=0.001, max_latency_ms=50.0)


def arr(*values: float, shape: tuple[int, ...] = (1, 4), dtype: Any = np.float32) -> Any:
    return np.asarray(values, dtype=dtype).reshape(shape)


def one(outputs: dict[str, Any], latency: float = 10.0, gate: Gate = GATE) -> tuple[bool, str]:
    r = evaluate(gate, [SampleRun(outputs, latency)])
    return r.passed, r.message


def test_pass_within_tolerance() -> None:
    passed, msg = one({"probabilities": arr(0.105, 0.2, 0.3, 0.4), "extra": arr(1.0, shape=(1,))})
    assert passed
    assert msg == "1 sample within atol 0.01 + rtol 0.001*|expected|, max latency 10 ms"


def test_value_beyond_tolerance_names_the_element() -> None:
    passed, msg = one({"probabilities": arr(0.1, 0.31, 0.3, 0.4)})
    assert not passed
    assert msg == (
        "output probabilities[0,1]: 0.31 vs expected 0.2 beyond atol 0.01 + rtol 0.001*|expected|"
    )


def test_worst_element_reported_with_count() -> None:
    passed, msg = one({"probabilities": arr(0.2, 0.2, 0.9, 0.4)})
    assert not passed
    assert msg.startswith("output probabilities[0,2]: 0.9 vs expected 0.3")
    assert msg.endswith("(2 of 4 values differ)")


def test_vector_index_and_flat_list() -> None:
    gate = Gate((Sample((X,), (Tensor("p", "FP32", (3,), (1.0, 2.0, 3.0)),)),))
    assert one({"p": [1.0, 2.0, 3.0005]}, gate=gate)[0]
    passed, msg = one({"p": [1.0, 2.5, 3.0]}, gate=gate)
    assert not passed
    assert msg.startswith("output p[1]: 2.5 vs expected 2 beyond atol 0.001")
    passed, msg = one({"p": [1.0, 2.0]}, gate=gate)
    assert msg == "output 'p' has 2 values vs expected 3 (shape [3])"


def test_relative_tolerance_scales_with_expected() -> None:
    big = Tensor("y", "FP32", (1,), (1000.0,))
    gate = Gate((Sample((X,), (big,)),), absolute_tolerance=0.0, relative_tolerance=0.01)
    assert one({"y": np.array([1009.0], np.float32)}, gate=gate)[0]
    assert not one({"y": np.array([1011.0], np.float32)}, gate=gate)[0]
    # The tolerance scales with |expected|, not |actual| (allclose is not symmetric).
    wide = Gate((Sample((X,), (Tensor("y", "FP32", (1,), (100.0,)),)),), 0.0, 0.1)
    assert not one({"y": np.array([110.5], np.float32)}, gate=wide)[0]
    assert one({"y": np.array([90.0], np.float32)}, gate=wide)[0]


def test_latency_limit() -> None:
    passed, msg = one({"probabilities": arr(0.1, 0.2, 0.3, 0.4)}, latency=73.2)
    assert (passed, msg) == (False, "latency 73 ms > limit 50 ms")


def test_missing_output() -> None:
    assert one({"logits": arr(0.1, 0.2, 0.3, 0.4)}) == (False, "missing output 'probabilities'")


def test_shape_mismatch() -> None:
    passed, msg = one({"probabilities": arr(0.1, 0.2, 0.3, shape=(1, 3))})
    assert (passed, msg) == (False, "output 'probabilities' shape [1,3] vs expected [1,4]")


def test_datatype_mismatch() -> None:
    got = arr(0.1, 0.2, 0.3, 0.4, dtype=np.float64)
    assert one({"probabilities": got}) == (
        False,
        "output 'probabilities' datatype FP64 vs expected FP32",
    )


def test_nan_never_passes() -> None:
    passed, msg = one({"probabilities": arr(0.1, math.nan, 0.3, 0.4)})
    assert not passed
    assert msg.startswith("output probabilities[0,1]: nan vs expected 0.2")
    gate = Gate((Sample((X,), (Tensor("p", "FP64", (1,), (math.nan,)),)),))
    assert not one({"p": np.array([math.nan])}, gate=gate)[0]


def test_failed_call_fails_the_gate() -> None:
    r = evaluate(GATE, [SampleRun({}, 0.0, error="INVALID_ARGUMENT: bad input")])
    assert (r.passed, r.message) == (False, "inference failed: INVALID_ARGUMENT: bad input")


def test_several_samples_and_failures_all_listed() -> None:
    gate = Gate((SAMPLE, SAMPLE), 0.01, 0.001, max_latency_ms=50.0)
    good = SampleRun({"probabilities": arr(0.1, 0.2, 0.3, 0.4)}, 5.0)
    bad = SampleRun({"probabilities": arr(0.1, 0.2, 0.3, shape=(1, 3))}, 60.0)
    r = evaluate(gate, [good, bad])
    assert not r.passed
    assert r.failures == (
        "sample 1: output 'probabilities' shape [1,3] vs expected [1,4]",
        "sample 1: latency 60 ms > limit 50 ms",
    )
    assert r.message == r.failures[0] + " (and 1 more)"
    assert evaluate(gate, [good]).message == "2 samples but 1 results"
    assert evaluate(gate, [good, good]).passed


def test_inconsistent_expected_tensor_is_reported() -> None:
    gate = Gate((Sample((X,), (Tensor("p", "FP32", (2, 2), (1.0, 2.0, 3.0)),)),))
    assert one({"p": [1.0, 2.0, 3.0]}, gate=gate) == (
        False,
        "expected 'p': shape [2,2] holds 4 values, data has 3",
    )


def test_input_tensors_are_typed_and_shaped() -> None:
    sample = Sample(
        inputs=(
            Tensor("image", "UINT8", (1, 2, 2), (0, 255, 7, 8)),
            Tensor("scale", "FP16", (1,), (0.5,)),
            Tensor("mask", "BOOL", (2,), (1, 0)),
            Tensor("bf", "BF16", (2,), (1.0, 2.0)),
        ),
        expected=(PROBS,),
    )
    wire = input_tensors(sample)
    assert [(w.name, w.datatype, w.shape) for w in wire] == [
        ("image", "UINT8", (1, 2, 2)),
        ("scale", "FP16", (1,)),
        ("mask", "BOOL", (2,)),
        ("bf", "BF16", (2,)),
    ]
    assert [w.array.dtype for w in wire] == [np.uint8, np.float16, np.bool_, np.float32]
    assert wire[0].array.shape == (1, 2, 2)
    assert wire[0].array[0, 0, 1] == 255
    assert wire[2].array.tolist() == [True, False]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (Tensor("n", "INT32", (2,), (1.0, 1.5)), "input 'n'[1]: 1.5 does not fit INT32"),
        (Tensor("n", "UINT8", (1, 2), (3.0, 256.0)), "input 'n'[0,1]: 256 does not fit UINT8"),
        (Tensor("n", "BOOL", (1,), (2.0,)), "input 'n'[0]: 2 does not fit BOOL"),
        (Tensor("n", "FP32", (2, 2), (1.0,)), "input 'n': shape [2,2] holds 4 values, data has 1"),
        (Tensor("s", "BYTES", (1,), (1.0,)), "input 's': datatype BYTES is not supported"),
    ],
)
def test_bad_inputs_raise(tensor: Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tensor_array(tensor)


def test_gate_from_spec() -> None:
    spec = ValidationGate.model_validate(
        {
            "samples": [
                {
                    "inputs": [{"name": "x", "shape": [1, 2], "data": [0.5, 1.5]}],
                    "expected": [{"name": "probabilities", "shape": [1, 4],
                                  "data": [0.1, 0.2, 0.3, 0.4]}],
                }
            ],
            "absoluteTolerance": 0.01,
            "relativeTolerance": 0.001,
            "maxLatencyMs": 50,
        }
    )  # fmt: skip
    assert gate_from_spec(spec) == GATE


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(finite, finite), min_size=1, max_size=12),
    atol=st.sampled_from([0.0, 1e-3, 0.1, 5.0]),
    rtol=st.sampled_from([0.0, 1e-3, 0.05]),
    nudge=st.booleans(),
)
def test_verdict_matches_numpy_allclose(
    pairs: list[tuple[float, float]], atol: float, rtol: float, nudge: bool
) -> None:
    want = [e for _, e in pairs]
    got: npt.NDArray[np.float64] = np.asarray(
        [e if nudge else g for g, e in pairs], dtype=np.float64
    )
    expected = Tensor("y", "FP64", (len(pairs),), tuple(want))
    gate = Gate((Sample((X,), (expected,)),), absolute_tolerance=atol, relative_tolerance=rtol)
    r = evaluate(gate, [SampleRun({"y": got}, 1.0)])
    assert r.passed == bool(np.allclose(got, np.asarray(want), rtol=rtol, atol=atol))
    assert r.passed or r.message.startswith("output y[")
