"""The OpenAI-compatible cloud fallback's pure parts: request bodies, prices, errors, SSE."""

from __future__ import annotations

import httpx
import pytest
from hatswarm_agent.backends.generation import GenerationParams, Usage
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.cloudgen import (
    CloudStream,
    _status_error,
    request_body,
    token_cost_usd,
)
from hatswarm_agent.serving.errors import ForwardedError, SaturatedError, StreamBrokenError
from hatswarm_agent.serving.generation import GenerationCall


def call(prompt: object, **params: object) -> GenerationCall:
    return GenerationCall("tiny", "", prompt, GenerationParams(**params))  # type: ignore[arg-type]


def test_chat_and_completion_bodies_carry_the_sampling_parameters() -> None:
    messages = [{"role": "user", "content": "hi"}]
    path, body = request_body(
        call(messages, max_tokens=5, temperature=0.0, seed=3, stop=("x",)), "big"
    )
    assert path == "/chat/completions"
    assert body == {
        "model": "big", "stream": True, "stream_options": {"include_usage": True},
        "temperature": 0.0, "top_p": 1.0, "max_tokens": 5, "seed": 3, "stop": ["x"],
        "messages": messages,
    }  # fmt: skip
    path, body = request_body(call("once upon"), "big")
    assert path == "/completions" and body["prompt"] == "once upon" and "max_tokens" not in body


def test_token_prices() -> None:
    cloud = control_pb2.CloudFallback(price_per_1m_input_usd=3, price_per_1m_output_usd=15)
    assert token_cost_usd(cloud, Usage(1_000_000, 2_000_000)) == pytest.approx(33.0)
    assert token_cost_usd(control_pb2.CloudFallback(), Usage(10, 10)) == 0.0


def test_refusals_map_to_the_status_a_door_answers() -> None:
    busy = _status_error("m", 429, b'{"error": {"message": "slow down"}}')
    assert isinstance(busy, SaturatedError) and "slow down" in str(busy)
    bad = _status_error("m", 400, b'{"error": {"message": "too long"}}')
    assert isinstance(bad, ForwardedError) and bad.code.name == "INVALID_ARGUMENT"
    ours = _status_error("m", 401, b"nope")  # our key, not the caller's: not a 401 for them
    assert isinstance(ours, ForwardedError) and ours.code.name == "UNAVAILABLE"
    assert "HTTP 401" in str(ours) and "nope" in str(ours)


def sse(*events: str) -> httpx.Response:
    body = "".join(f"data: {e}\n\n" for e in events).encode()
    return httpx.Response(200, content=body, request=httpx.Request("POST", "http://cloud/v1"))


async def read(stream: CloudStream) -> str:
    await stream.first(5.0)
    return "".join([p.text async for p in stream])


async def test_a_stream_without_usage_counts_chunks_and_the_edge_prompt() -> None:
    ended: list[tuple[Usage, bool]] = []
    response = sse(
        '{"choices": [{"delta": {"role": "assistant"}}]}',
        '{"choices": [{"delta": {"content": "a"}}]}',
        '{"choices": [{"delta": {"content": "b"}, "finish_reason": "length"}]}',
        "[DONE]",
    )
    stream = CloudStream(response, call("x"), lambda u, f: ended.append((u, f)), prompt_tokens=7)
    assert await read(stream) == "ab"
    assert stream.finish_reason == "length"
    assert ended == [(Usage(7, 2), False)]


async def test_the_clouds_usage_wins_and_an_error_event_breaks_the_stream() -> None:
    usage = '{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}'
    stream = CloudStream(
        sse('{"choices": [{"text": "z", "finish_reason": "stop"}]}', usage, "[DONE]"),
        call("x"),
        lambda u, f: None,
        prompt_tokens=99,
    )
    assert await read(stream) == "z" and stream.usage == Usage(3, 1)
    ended: list[bool] = []
    broken = CloudStream(
        sse('{"choices": [{"text": "z"}]}', '{"error": {"message": "overloaded"}}'),
        call("x"),
        lambda u, f: ended.append(f),
        prompt_tokens=1,
    )
    with pytest.raises(StreamBrokenError, match="overloaded"):
        await read(broken)
    assert ended == [True]
