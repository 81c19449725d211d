"""tensors.py: OIP <-> numpy, and every validation a bad request must hit before a backend."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hatswarm_agent.backends.base import TensorSpec
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.serving.errors import InvalidInputError
from hatswarm_agent.serving.tensors import (
    NUMPY_TO_OIP,
    TensorLimits,
    check_wire_limits,
    decode_request,
    encode_bytes,
    encode_response,
    is_large,
    select_outputs,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

X = TensorSpec("x", "FP32", (-1, 4))
IDS = TensorSpec("ids", "INT64", (-1, 4))
Y = TensorSpec("y", "FP32", (-1, 2))


def raw_request(**arrays: np.ndarray) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", id="r1")
    for name, arr in arrays.items():
        req.inputs.add(name=name, datatype=NUMPY_TO_OIP[arr.dtype], shape=arr.shape)
        req.raw_input_contents.append(arr.tobytes())
    return req


def test_raw_decode_is_zero_copy_view_with_batch_and_key() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    decoded = decode_request(raw_request(x=x, ids=ids), [X, IDS], batchable=True)
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    np.testing.assert_array_equal(decoded.inputs["ids"], ids)
    assert decoded.batch == 3
    assert decoded.key == ((4,), (4,))
    assert decoded.raw
    assert not decoded.inputs["x"].flags.owndata


def test_typed_decode_range_checks_narrow_types() -> None:
    spec = TensorSpec("u", "UINT8", (3,))
    req = pb.ModelInferRequest()
    req.inputs.add(name="u", datatype="UINT8", shape=[3]).contents.uint_contents.extend([0, 7, 255])
    decoded = decode_request(req, [spec], batchable=False)
    assert decoded.inputs["u"].dtype == np.uint8
    assert decoded.inputs["u"].tolist() == [0, 7, 255]
    assert not decoded.raw
    req.inputs[0].contents.uint_contents[2] = 256
    with pytest.raises(InvalidInputError, match="out of range for UINT8"):
        decode_request(req, [spec], batchable=False)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: setattr(r.inputs[0], "name", "z"), "unexpected input 'z'"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP64"), "'x': datatype FP64, expected FP32"),
        (lambda r: r.inputs[0].shape.__setitem__(1, 5), r"'x': shape \[2, 5\], expected \[-1, 4\]"),
        (lambda r: r.inputs[0].shape.append(1), "'x': shape"),
        (
            lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 31),
            "'x': 31 raw bytes, expected 32",
        ),
        (
            lambda r: r.inputs[0].contents.fp32_contents.append(1.0),
            "both raw_input_contents and typed",
        ),
        (
            lambda r: r.raw_input_contents.append(b""),
            "raw_input_contents has 2 entries for 1 inputs",
        ),
        (
            lambda r: (
                r.inputs[0].shape.__setitem__(0, 0),
                r.raw_input_contents.__setitem__(0, b""),
            ),
            "batch dimension",
        ),
        (lambda r: r.inputs[0].shape.__setitem__(0, -2), "'x': shape"),
    ],
)
def test_bad_inputs_name_the_input_and_the_expectation(mutate, message) -> None:  # type: ignore[no-untyped-def]
    req = raw_request(x=np.zeros((2, 4), np.float32))
    mutate(req)
    with pytest.raises(InvalidInputError, match=message):
        decode_request(req, [X], batchable=True)


def test_missing_and_duplicate_inputs() -> None:
    with pytest.raises(InvalidInputError, match=r"missing inputs \['ids'\]"):
        decode_request(raw_request(x=np.zeros((1, 4), np.float32)), [X, IDS], batchable=True)
    req = raw_request(x=np.zeros((1, 4), np.float32))
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(np.zeros((1, 4), np.float32).tobytes())
    with pytest.raises(InvalidInputError, match="given twice"):
        decode_request(req, [X], batchable=True)


def test_an_optional_input_may_be_left_out_a_required_one_not() -> None:
    """Triton's `optional` inputs (a generative model's sampling parameters): left out, the
    request decodes without them; given, they are checked like any input."""
    opt = TensorSpec("ids", "INT64", (-1, 4), optional=True)
    x = np.zeros((2, 4), np.float32)
    decoded = decode_request(raw_request(x=x), [X, opt], batchable=True)
    assert set(decoded.inputs) == {"x"} and decoded.batch == 2
    both = decode_request(raw_request(x=x, ids=np.ones((2, 4), np.int64)), [X, opt], True)
    assert set(both.inputs) == {"x", "ids"} and both.key != decoded.key  # never merged
    with pytest.raises(InvalidInputError, match=r"missing inputs \['x'\]"):
        decode_request(raw_request(ids=np.ones((2, 4), np.int64)), [X, opt], batchable=True)
    with pytest.raises(InvalidInputError, match="'ids': datatype FP32, expected INT64"):
        decode_request(raw_request(x=x, ids=x), [X, opt], batchable=True)


def test_batch_dims_must_agree() -> None:
    req = raw_request(x=np.zeros((2, 4), np.float32), ids=np.zeros((3, 4), np.int64))
    with pytest.raises(InvalidInputError, match="disagree on the batch"):
        decode_request(req, [X, IDS], batchable=True)


def test_fp16_is_raw_only_and_typed_field_must_match() -> None:
    spec = TensorSpec("h", "FP16", (2,))
    req = pb.ModelInferRequest()
    req.inputs.add(name="h", datatype="FP16", shape=[2]).contents.fp32_contents.extend([1, 2])
    with pytest.raises(InvalidInputError, match="FP16 must be sent in raw_input_contents"):
        decode_request(req, [spec], batchable=False)
    req = pb.ModelInferRequest()
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.int_contents.extend([1] * 4)
    with pytest.raises(InvalidInputError, match=r"belongs in contents\.fp32_contents"):
        decode_request(req, [X], batchable=True)
    req.inputs[0].ClearField("contents")
    req.inputs[0].contents.fp32_contents.extend([1.0] * 3)
    with pytest.raises(
        InvalidInputError, match=r"3 elements in contents\.fp32_contents, expected 4"
    ):
        decode_request(req, [X], batchable=True)


def test_bytes_raw_layout_round_trip_and_truncation() -> None:
    spec = TensorSpec("s", "BYTES", (3,))
    arr = np.array([b"a", b"", b"xyz"], dtype=np.object_)
    raw = encode_bytes(arr)
    req = pb.ModelInferRequest()
    req.inputs.add(name="s", datatype="BYTES", shape=[3])
    req.raw_input_contents.append(raw)
    assert decode_request(req, [spec], batchable=False).inputs["s"].tolist() == arr.tolist()
    req.raw_input_contents[0] = raw[:-1]
    with pytest.raises(InvalidInputError, match="truncated"):
        decode_request(req, [spec], batchable=False)
    req.raw_input_contents[0] = raw + b"!"
    with pytest.raises(InvalidInputError, match="trailing"):
        decode_request(req, [spec], batchable=False)


def test_response_mirrors_request_style_and_fp16_forces_raw() -> None:
    y = np.arange(4, dtype=np.float32).reshape(2, 2)
    req = pb.ModelInferRequest(model_name="m", id="abc")
    raw = encode_response(req, "3", {"y": y}, [Y], raw=True)
    assert (raw.model_name, raw.model_version, raw.id) == ("m", "3", "abc")
    assert np.frombuffer(raw.raw_output_contents[0], np.float32).tolist() == y.ravel().tolist()
    typed = encode_response(req, "3", {"y": y}, [Y], raw=False)
    assert list(typed.outputs[0].contents.fp32_contents) == y.ravel().tolist()
    assert not typed.raw_output_contents
    h = TensorSpec("h", "FP16", (-1, 2))
    forced = encode_response(req, "3", {"y": y, "h": y.astype(np.float16)}, [Y, h], raw=False)
    assert len(forced.raw_output_contents) == 2


def test_requested_outputs_select_and_reject_unknown() -> None:
    z = TensorSpec("z", "FP32", (1,))
    req = pb.ModelInferRequest()
    assert select_outputs(req, [Y, z]) == [Y, z]
    req.outputs.add(name="z")
    assert select_outputs(req, [Y, z]) == [z]
    req.outputs.add(name="nope")
    with pytest.raises(InvalidInputError, match="unknown requested output 'nope'"):
        select_outputs(req, [Y, z])


_DTYPES = st.sampled_from([np.float32, np.float64, np.int8, np.uint16, np.int64, np.bool_])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)))
def test_raw_round_trip_preserves_every_array(arr: np.ndarray) -> None:
    spec = TensorSpec("t", NUMPY_TO_OIP[arr.dtype], tuple(-1 for _ in arr.shape))
    decoded = decode_request(raw_request(t=arr), [spec], batchable=True)
    out = encode_response(pb.ModelInferRequest(), "1", decoded.inputs, [spec], raw=True)
    back = np.frombuffer(out.raw_output_contents[0], arr.dtype).reshape(out.outputs[0].shape)
    np.testing.assert_array_equal(back, arr)


S = TensorSpec("s", "BYTES", (-1,))


def _strings(count: int, item: bytes = b"", raw: bool = True) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="s", datatype="BYTES", shape=[count])
    if raw:
        req.raw_input_contents.append((len(item).to_bytes(4, "little") + item) * count)
    else:
        t.contents.bytes_contents.extend([item] * count)
    return req


@pytest.mark.parametrize("raw", [True, False])
def test_bytes_limits_refuse_before_decoding_naming_the_limit(raw: bool) -> None:
    limits = TensorLimits(max_bytes_elements=1000, max_decoded_bytes=1 << 20)
    assert decode_request(_strings(1000, raw=raw), [S], True, limits).inputs["s"].shape == (1000,)
    with pytest.raises(
        InvalidInputError, match=r"1001 BYTES elements .* limit of 1000 \(--max-bytes-elements\)"
    ):
        decode_request(_strings(1001, raw=raw), [S], True, limits)
    with pytest.raises(
        InvalidInputError, match=r"over this node's limit of 1048576 \(--max-decoded-bytes\)"
    ):
        decode_request(_strings(100, b"x" * 20000, raw=raw), [S], True, limits)


def test_a_bytes_count_the_raw_data_cannot_hold_is_refused_without_a_loop() -> None:
    req = _strings(10)
    req.inputs[0].shape[0] = 8 << 20  # 8M elements announced, 40 bytes sent
    with pytest.raises(InvalidInputError, match="40 bytes cannot hold 8388608 elements"):
        decode_request(req, [S], True, TensorLimits(max_bytes_elements=1 << 30))


def test_large_requests_are_recognised_cheaply() -> None:
    assert not is_large(_strings(10))
    assert is_large(_strings(1 << 18))  # 1 MiB of length prefixes
    assert is_large(_strings(1 << 16, raw=False))


def test_a_negative_dimension_says_so() -> None:
    req = raw_request(x=np.zeros((1, 4), np.float32))
    req.inputs[0].shape[0] = -1
    with pytest.raises(
        InvalidInputError, match=r"shape \[-1, 4\] has a negative dimension \(index 0\)"
    ):
        decode_request(req, [X], batchable=True)


def test_wire_limits_read_shapes_without_touching_the_data() -> None:
    limits = TensorLimits(max_bytes_elements=1000)
    ok = _strings(1000).SerializeToString()
    check_wire_limits(ok, limits)
    big = _strings(10)
    big.inputs[0].shape[0] = 8 << 20  # what the shape says is all that is read
    with pytest.raises(InvalidInputError, match=r"'s': 8388608 BYTES elements .* limit of 1000"):
        check_wire_limits(big.SerializeToString(), limits)
    two = _strings(600)
    two.inputs.add(name="t", datatype="BYTES", shape=[1, 500])
    with pytest.raises(InvalidInputError, match="'t': 1100 BYTES elements"):
        check_wire_limits(two.SerializeToString(), limits)
    numbers = raw_request(x=np.zeros((4096, 4), np.float32))
    check_wire_limits(numbers.SerializeToString(), limits)  # only BYTES counts
    with pytest.raises(InvalidInputError, match="not a valid ModelInferRequest"):
        check_wire_limits(ok[:-3] + b"\xff\xff", limits)


@given(st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_wire_limits_never_crash_on_garbage(data: bytes) -> None:
    with contextlib.suppress(InvalidInputError):
        check_wire_limits(data, TensorLimits())
