"""streaming.py: Triton vLLM-backend tensors <-> GenerationCall, and the responses both ways."""

from __future__ import annotations

import json
import struct

import grpc
import pytest
from hatswarm_agent.backends.generation import (
    BackendBusyError,
    GenerationParams,
    Piece,
    Timings,
    Usage,
)
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.serving import streaming
from hatswarm_agent.serving.errors import InvalidInputError
from hatswarm_agent.serving.generation import GenerationCall


def vllm_request(
    prompt: str = "hi", *, stream: bool | None = True, sampling: object = None, raw: bool = False
) -> pb.ModelInferRequest:
    """What tritonclient sends for Triton's vLLM backend."""
    request = pb.ModelInferRequest(model_name="tiny", id="r7")
    items: list[tuple[str, str, object]] = [("text_input", "BYTES", prompt.encode())]
    if stream is not None:
        items.append(("stream", "BOOL", stream))
    if sampling is not None:
        items.append(("sampling_parameters", "BYTES", json.dumps(sampling).encode()))
    for name, datatype, value in items:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1])
        if raw:
            if datatype == "BYTES":
                assert isinstance(value, bytes)
                request.raw_input_contents.append(struct.pack("<I", len(value)) + value)
            else:
                request.raw_input_contents.append(bytes([bool(value)]))
        elif datatype == "BYTES":
            assert isinstance(value, bytes)
            tensor.contents.bytes_contents.append(value)
        else:
            tensor.contents.bool_contents.append(bool(value))
    return request


@pytest.mark.parametrize("raw", [False, True])
def test_decode_reads_the_vllm_tensors_typed_or_raw(raw: bool) -> None:
    asked = streaming.decode_generation(
        vllm_request("hello", sampling={"max_tokens": 5, "temperature": 0, "stop": "x"}, raw=raw)
    )
    assert asked.call == GenerationCall(
        "tiny", "", "hello", GenerationParams(max_tokens=5, temperature=0.0, stop=("x",))
    )
    assert asked.stream and asked.exclude_input and asked.raw == raw and not asked.empty_final


def test_defaults_follow_vllm_not_streaming_echoes_the_prompt() -> None:
    asked = streaming.decode_generation(vllm_request(stream=None))
    assert not asked.stream and not asked.exclude_input
    assert asked.call.params == GenerationParams()


def test_sampling_may_come_as_request_parameters_and_messages_as_json() -> None:
    request = pb.ModelInferRequest(model_name="tiny")
    request.parameters["hatswarm.messages"].string_param = json.dumps(
        [{"role": "user", "content": "hi"}]
    )
    request.parameters["max_tokens"].int64_param = 3
    request.parameters["temperature"].double_param = 0.0
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    asked = streaming.decode_generation(request)
    assert asked.call.prompt == [{"role": "user", "content": "hi"}]
    assert asked.call.params == GenerationParams(max_tokens=3, temperature=0.0)
    assert asked.empty_final


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r.inputs.add(name="image", datatype="FP32", shape=[1]),
            "unexpected input 'image'",
        ),
        (lambda r: setattr(r.inputs[0], "datatype", "FP32"), "expected BYTES"),
        (lambda r: r.inputs[0].shape.append(2), "expected [1]"),
        (lambda r: r.inputs.pop(0), "text_input"),
        (lambda r: r.parameters["temperature"].__setattr__("double_param", 9.0), "temperature"),
    ],
)
def test_bad_requests_name_the_problem(mutate: object, message: str) -> None:
    request = vllm_request()
    mutate(request)  # type: ignore[operator]
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[")):
        streaming.decode_generation(request)


def test_bad_sampling_json_is_invalid() -> None:
    request = vllm_request()
    tensor = request.inputs.add(name="sampling_parameters", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"{nope")
    with pytest.raises(InvalidInputError, match="not JSON"):
        streaming.decode_generation(request)


@pytest.mark.parametrize("prompt", ["a prompt", [{"role": "user", "content": "hi"}]])
def test_what_a_forwarding_agent_sends_decodes_to_the_same_call(prompt: object) -> None:
    call = GenerationCall(
        "tiny", "2", prompt,  # type: ignore[arg-type]
        GenerationParams(max_tokens=7, temperature=0.5, top_p=0.9, top_k=3, seed=11, stop=("\n",)),
    )  # fmt: skip
    asked = streaming.decode_generation(streaming.encode_generation(call, "9"))
    assert asked.call == call
    assert asked.stream and asked.exclude_input


@pytest.mark.parametrize("raw", [False, True])
def test_pieces_and_the_end_read_back(raw: bool) -> None:
    request = vllm_request()
    piece = streaming.piece_response(request, Piece("héllo", 2), raw, "node-a", "local")
    r = piece.infer_response
    assert r.id == "r7" and not streaming.is_final(r)
    assert streaming.read_piece(r) == Piece("héllo", 2)
    assert r.parameters["hatswarm.node"].string_param == "node-a"
    end = streaming.final_response(
        request, "length", Usage(5, 9), text="", raw=raw, node="node-a", route="local"
    ).infer_response
    assert streaming.is_final(end) and streaming.read_text(end) == ""
    assert streaming.read_end(end) == ("length", Usage(5, 9))
    assert streaming.read_timings(end) is None  # not measured: none rather than zeros
    empty = streaming.final_response(
        request, "stop", Usage(1, 1), text=None, raw=raw, node="n", route="local"
    ).infer_response
    assert not empty.outputs and streaming.is_final(empty)
    timed = streaming.final_response(
        request, "stop", Usage(5, 9), text="", raw=raw, node="n", route="local",
        timings=Timings(0.25, 0.5, 8),
    ).infer_response  # fmt: skip
    assert streaming.read_timings(timed) == Timings(0.25, 0.5, 8)


def test_an_error_is_final_and_carries_its_code() -> None:
    error = streaming.error_response(vllm_request(), BackendBusyError("all slots busy"))
    assert error.error_message == "all slots busy"
    assert streaming.error_code(error) == grpc.StatusCode.RESOURCE_EXHAUSTED.name
    assert streaming.is_final(error.infer_response) and error.infer_response.id == "r7"
