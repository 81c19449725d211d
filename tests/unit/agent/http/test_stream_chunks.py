"""The streaming doors' chunking (http/openai.sse, http/ollama): pieces that are ready when a
chunk is written go out together as one chunk, a stream whose pieces come one at a time
gets one chunk a piece, and the usage counts tokens either way. A real aiohttp server and
client; the pieces come from a real TokenStream fed as a backend feeds it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hatswarm_agent.backends.generation import Outcome, Piece, TokenStream
from hatswarm_agent.http.openai import sse, sse_template, usage_json
from hatswarm_agent.serving.generation import ready_pieces

PIECES = [Piece("Hel", 2), Piece("lo", 1), Piece("", 1), Piece(", wé", 3), Piece("rld", 1)]
TOKENS = sum(p.tokens for p in PIECES)


class Stream(TokenStream):
    """A TokenStream with what the doors read of a PieceStream (where it runs)."""

    node = "here"
    route = "local"


async def feed(stream: Stream, gap_s: float) -> None:
    for piece in PIECES:
        if gap_s:
            await asyncio.sleep(gap_s)
        stream.push(piece)
    stream.push(Outcome("length", TOKENS))


def completion_chunk(text: str, reason: str | None = None) -> dict[str, Any]:
    return {"id": "c", "object": "text_completion", "choices": [{"text": text, "index": 0}]}


@pytest.fixture
async def client() -> AsyncIterator[Callable[[float], Awaitable[list[dict[str, Any]]]]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        stream = Stream(4)
        gap = float(request.query["gap"])
        if gap:
            task = asyncio.ensure_future(feed(stream, gap))
        else:
            await feed(stream, 0)  # everything is ready before the first chunk is written
        template = sse_template(completion_chunk)
        try:
            return await sse(
                request,
                stream,
                lambda text: template(text) if text else None,
                lambda s: {**completion_chunk("", "length"), "usage": usage_json(s.usage)},
            )
        finally:
            if gap:
                await task

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as c:

        async def events(gap: float) -> list[dict[str, Any]]:
            response = await c.get("/", params={"gap": str(gap)})
            body = (await response.read()).decode()
            assert body.endswith("data: [DONE]\n\n")
            return [
                json.loads(line[6:]) for line in body.split("\n\n") if line.startswith("data: {")
            ]

        yield events


async def test_ready_pieces_go_out_as_one_chunk_with_usage_in_tokens(
    client: Callable[[float], Awaitable[list[dict[str, Any]]]],
) -> None:
    *chunks, end = await client(0)
    assert [c["choices"][0]["text"] for c in chunks] == ["Hello, wérld"]
    assert end["usage"]["completion_tokens"] == TOKENS and end["usage"]["prompt_tokens"] == 4


async def test_pieces_that_come_one_at_a_time_get_a_chunk_each(
    client: Callable[[float], Awaitable[list[dict[str, Any]]]],
) -> None:
    *chunks, end = await client(0.05)
    assert [c["choices"][0]["text"] for c in chunks] == [p.text for p in PIECES if p.text]
    assert end["usage"]["completion_tokens"] == TOKENS


def test_the_sse_template_writes_what_json_dumps_writes() -> None:
    for text in ("", "a", 'quo"te\\ \n', "wé ☃ \x00", "\ud83d\ude00"):
        doc = completion_chunk(text)
        assert (
            sse_template(completion_chunk)(text) == b"data: " + json.dumps(doc).encode() + b"\n\n"
        )


async def test_ready_pieces_takes_what_arrived_and_counts_its_tokens() -> None:
    stream = Stream(1)
    stream.push_many([*PIECES, Outcome("stop", TOKENS)])
    first = await stream.__anext__()
    rest = ready_pieces(stream)
    assert [first, *rest] == PIECES
    assert stream.completion_tokens == TOKENS
    assert [p async for p in stream] == [] and stream.finish_reason == "stop"
    assert ready_pieces(object()) == []  # type: ignore[arg-type]  # a stream that cannot tell
