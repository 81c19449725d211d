"""The HTTP doors' pure parts: KServe v2 JSON <-> OIP, OpenAI bodies, errors -> HTTP statuses."""

from __future__ import annotations

import numpy as np
import pytest
from hatswarm_agent.backends.generation import BackendBusyError, ContextLengthError, Timings
from hatswarm_agent.http.common import HttpError, http_error
from hatswarm_agent.http.kserve import output_array, request_from_json, response_json
from hatswarm_agent.http.openai import _embedding_inputs, chat_messages, error_body, timings_json
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.serving.errors import (
    ModelNotFoundError,
    ModelNotReadyError,
    QueueFullError,
    StreamBrokenError,
)
from hatswarm_agent.serving.tensors import encode_bytes


def tensor(name: str, datatype: str, shape: list[int], data: object) -> dict[str, object]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def test_json_inputs_become_raw_contents_of_their_datatype() -> None:
    request = request_from_json(
        "m",
        "2",
        {
            "id": "q",
            "parameters": {"priority": 3},
            "inputs": [
                tensor("x", "FP32", [2, 2], [[1, 2], [3, 4.5]]),
                tensor("t", "BYTES", [2], ["a", "bé"]),
                tensor("b", "BOOL", [1], [True]),
                tensor("u", "UINT8", [3], [0, 7, 255]),
            ],
            "outputs": [{"name": "y"}],
        },
    )
    assert request.model_version == "2" and request.id == "q"
    assert request.parameters["priority"].int64_param == 3
    raw = request.raw_input_contents
    np.testing.assert_array_equal(np.frombuffer(raw[0], np.float32), [1, 2, 3, 4.5])
    strings = np.empty(2, dtype=object)
    strings[:] = [b"a", "bé".encode()]
    assert raw[1] == encode_bytes(strings)
    assert raw[2] == b"\x01" and raw[3] == bytes([0, 7, 255])
    assert [o.name for o in request.outputs] == ["y"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([tensor("u", "UINT8", [1], [300])], "out of range"),
        ([tensor("x", "FP32", [3], [1, 2])], "2 elements, expected 3"),
        ([tensor("x", "INT32", [1], [1.5])], "does not fit INT32"),
        ([tensor("x", "BF16", [1], [1.0])], "not supported in JSON"),
        ([tensor("x", "FP32", [-1], [1.0])], "non-negative"),
        ([{"name": "x", "shape": [1]}], "needs name, shape, datatype and data"),
        ([], "non-empty"),
    ],
)
def test_bad_json_tensors_are_400(inputs: list[object], message: str) -> None:
    with pytest.raises(HttpError, match=message) as info:
        request_from_json("m", "", {"inputs": inputs})
    assert info.value.status == 400


@pytest.mark.parametrize("raw", [True, False])
def test_responses_come_back_flat_in_json(raw: bool) -> None:
    response = pb.ModelInferResponse(model_name="m", model_version="1", id="q")
    response.parameters["hatswarm.node"].string_param = "pi-01"
    y = np.arange(6, dtype=np.int64).reshape(2, 3)
    response.outputs.add(name="y", datatype="INT64", shape=[2, 3])
    words = np.empty(1, dtype=object)
    words[:] = [b"ok"]
    response.outputs.add(name="w", datatype="BYTES", shape=[1])
    if raw:
        response.raw_output_contents.extend([y.tobytes(), encode_bytes(words)])
    else:
        response.outputs[0].contents.int64_contents.extend(y.reshape(-1).tolist())
        response.outputs[1].contents.bytes_contents.append(b"ok")
    np.testing.assert_array_equal(output_array(response, 0), y)
    doc = response_json(response)
    assert doc["outputs"] == [
        {"name": "y", "datatype": "INT64", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]},
        {"name": "w", "datatype": "BYTES", "shape": [1], "data": ["ok"]},
    ]
    assert doc["parameters"] == {"hatswarm.node": "pi-01"} and doc["id"] == "q"


def test_chat_messages_join_text_parts_and_refuse_images() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ]
    }
    assert chat_messages(body) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
    ]
    with pytest.raises(HttpError, match="image_url"):
        chat_messages({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
    with pytest.raises(HttpError, match="non-empty"):
        chat_messages({"messages": []})


def test_embedding_inputs_in_every_form_openai_sends() -> None:
    assert _embedding_inputs("a") == (["a"], [])
    assert _embedding_inputs(["a", "b"]) == (["a", "b"], [])
    assert _embedding_inputs([1, 2]) == ([], [[1, 2]])
    assert _embedding_inputs([[1], [2, 3]]) == ([], [[1], [2, 3]])
    for bad in ([], [1, "a"], [[]], 5, [True]):
        with pytest.raises(HttpError):
            _embedding_inputs(bad)


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (ModelNotFoundError("unknown model 'x'"), 404, "not_found_error"),
        (QueueFullError("full"), 429, "rate_limit_error"),
        (BackendBusyError("all slots busy"), 429, "rate_limit_error"),
        (ContextLengthError(300, 256), 400, "invalid_request_error"),
        (ModelNotReadyError("loading"), 503, "service_unavailable_error"),
        (StreamBrokenError("lost"), 503, "service_unavailable_error"),
        (RuntimeError("boom"), 500, "server_error"),
    ],
)
def test_errors_get_the_status_and_openai_type_of_their_kind(
    exc: Exception, status: int, kind: str
) -> None:
    error = http_error(exc)
    assert error.status == status
    body = error_body(error)["error"]
    assert body["type"] == kind and body["message"]


def test_timings_are_llama_cpp_servers_fields_and_rates() -> None:
    got = timings_json(Timings(prompt_s=0.25, decode_s=0.5, decode_tokens=20), prompt_tokens=10)
    assert got == {
        "prompt_n": 10,
        "prompt_ms": 250.0,
        "prompt_per_token_ms": 25.0,
        "prompt_per_second": 40.0,
        "predicted_n": 20,
        "predicted_ms": 500.0,
        "predicted_per_token_ms": 25.0,
        "predicted_per_second": 40.0,
    }
    empty = timings_json(Timings(0.0, 0.0, 0), prompt_tokens=0)
    assert empty["prompt_per_second"] == 0.0 and empty["predicted_per_token_ms"] == 0.0
