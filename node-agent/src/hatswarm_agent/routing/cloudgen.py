"""Generations in the cloud: the pool's cloud fallback spoken as an OpenAI-compatible HTTP API.

A generation goes to the cloud when the pool cannot serve it (no replica, every sequence slot
busy) and its route allows the fallback, or when its route escalates it (a prompt longer than
the edge model's context; an edge answer whose first tokens' mean log-probability is under the
route's threshold): the seed's "long-context or high-compute steps are forwarded to cloud
LLMs". Either way within the cloud's share of recent requests (`max_share`, the window the
OIP fallback uses too).

The cloud's answer is read as server-sent events (`stream: true`, usage requested with
`stream_options.include_usage`) and handed on as the same `PieceStream` a local or peer
generation is, so every front door relays it in its own shape (SSE, NDJSON, ModelStreamInfer).
Until the cloud's first piece nothing has reached the caller, so an error then raises (the
door answers with the cloud's status); after it, a broken stream ends with StreamBrokenError.
Tokens and their price are counted when the stream ends: the cloud's own usage when it sends
one, else the edge's prompt count (when known) and one token per content chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import httpx

from hatswarm_agent.backends.generation import (
    FinishReason,
    Message,
    Piece,
    Prompt,
    Timings,
    Usage,
)
from hatswarm_agent.protocol.auth import bearer
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.protocol.wire import NODE_CLOUD, ROUTE_CLOUD
from hatswarm_agent.routing.cloud import CloudTarget
from hatswarm_agent.serving.errors import (
    DeadlineError,
    ForwardedError,
    SaturatedError,
    StreamBrokenError,
)
from hatswarm_agent.serving.generation import GenerationCall
from hatswarm_agent.serving.metrics import CLOUD, RouteMetrics, TokenCounts

READ_TIMEOUT_S = 120.0  # between two chunks once the cloud has started answering
_MILLION = 1_000_000


def token_cost_usd(cloud: control_pb2.CloudFallback, usage: Usage) -> float:
    """What the cloud charges for `usage` at the table's per-1M-token prices."""

    def price(value: float) -> float:
        return value if math.isfinite(value) and value > 0 else 0.0

    return (
        usage.prompt_tokens * price(cloud.price_per_1m_input_usd)
        + usage.completion_tokens * price(cloud.price_per_1m_output_usd)
    ) / _MILLION


def request_body(call: GenerationCall, model: str) -> tuple[str, dict[str, Any]]:
    """(path under the base URL, JSON body) of the OpenAI request for `call`."""
    p = call.params
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": p.temperature,
        "top_p": p.top_p,
    }
    if p.max_tokens is not None:
        body["max_tokens"] = p.max_tokens
    if p.seed is not None:
        body["seed"] = p.seed
    if p.stop:
        body["stop"] = list(p.stop)
    prompt: Prompt = call.prompt
    if isinstance(prompt, str):
        return "/completions", {**body, "prompt": prompt}
    messages: Sequence[Message] = prompt
    return "/chat/completions", {**body, "messages": [dict(m) for m in messages]}


def _error_text(status: int, raw: bytes) -> str:
    """The message of an OpenAI error body, or the start of whatever the cloud sent."""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        message = json.loads(raw)["error"]["message"]
        if isinstance(message, str):
            return message[:500]
    return raw[:200].decode("utf-8", "replace") or f"HTTP {status}"


def _status_error(model: str, status: int, raw: bytes) -> Exception:
    """The cloud's refusal, as the error a front door answers with the matching status."""
    text = f"the cloud fallback refused model '{model}' (HTTP {status}): {_error_text(status, raw)}"
    if status == 429:
        return SaturatedError(text)
    codes = {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        401: grpc.StatusCode.UNAVAILABLE,  # our credential, not the caller's: not a 401 to them
        403: grpc.StatusCode.UNAVAILABLE,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.INVALID_ARGUMENT,
    }
    return ForwardedError(codes.get(status, grpc.StatusCode.UNAVAILABLE), text)


class CloudStream:
    """A generation the cloud is answering, read from its server-sent events."""

    route = ROUTE_CLOUD
    node = NODE_CLOUD

    def __init__(
        self,
        response: httpx.Response,
        call: GenerationCall,
        on_end: Any,
        prompt_tokens: int,
    ) -> None:
        self._response = response
        self._events = self._chunks(response.aiter_lines())
        self._call = call
        self._on_end = on_end
        self._pending: Piece | None = None
        self._done = False
        self._chunks_seen = 0
        self._prompt_estimate = prompt_tokens
        self._reported: Usage | None = None
        self.finish_reason: FinishReason | None = None
        self.timings: Timings | None = None  # the cloud's own time is not known

    @property
    def usage(self) -> Usage:
        if self._reported is not None:
            return self._reported
        return Usage(self._prompt_estimate, self._chunks_seen)

    @staticmethod
    async def _chunks(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
        async for line in lines:
            if not line.startswith("data:"):
                continue  # blank separators, comments, event names
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                raise StreamBrokenError(
                    f"the cloud sent an event that is not JSON: {data[:80]}"
                ) from None
            if isinstance(chunk, dict):
                if "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else error
                    raise StreamBrokenError(f"the cloud's stream failed: {message}")
                yield chunk

    async def first(self, timeout_s: float) -> None:
        """Wait for the first piece (or the end): errors before it raise here."""
        try:
            self._pending = await asyncio.wait_for(self._next(), max(timeout_s, 0.001))
        except TimeoutError:
            await self.aclose(failed=True)
            raise DeadlineError(
                f"the cloud fallback sent no first token for model '{self._call.model}' in time"
            ) from None
        except BaseException:
            await self.aclose(failed=True)
            raise

    async def _next(self) -> Piece | None:
        """The next piece of text; None at the end."""
        while True:
            try:
                chunk = await asyncio.wait_for(anext(self._events), READ_TIMEOUT_S)
            except StopAsyncIteration:
                return None
            except (httpx.HTTPError, TimeoutError) as exc:
                raise StreamBrokenError(
                    f"the cloud's stream broke off after {self._chunks_seen} chunks: "
                    f"{type(exc).__name__} {exc}"
                ) from None
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    self._reported = Usage(
                        int(usage["prompt_tokens"]), int(usage["completion_tokens"])
                    )
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                reason = choice.get("finish_reason")
                if reason:
                    self.finish_reason = "length" if reason == "length" else "stop"
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(text, str) and text:
                    self._chunks_seen += 1
                    return Piece(text, 1)

    def __aiter__(self) -> CloudStream:
        return self

    async def __anext__(self) -> Piece:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        if self._done:
            raise StopAsyncIteration
        try:
            piece = await self._next()
        except BaseException:
            await self.aclose(failed=True)
            raise
        if piece is None:
            self.finish_reason = self.finish_reason or "stop"
            await self.aclose()
            raise StopAsyncIteration
        return piece

    async def aclose(self, failed: bool = False) -> None:
        if not self._done:
            self._done = True
            await self._response.aclose()
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(self.usage, failed)


class CloudGenerations:
    """Starts generations on the table's OpenAI-compatible cloud and counts what they cost."""

    def __init__(self, cloud: CloudTarget, metrics: RouteMetrics, tokens: TokenCounts) -> None:
        self.cloud = cloud
        self.metrics = metrics
        self.tokens = tokens
        self._client: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cloud.config.openai_base_url)

    def allow(self) -> bool:
        """Whether one more generation may go to the cloud now (configured, within share)."""
        return self.enabled and self.cloud.window.allow(self.cloud.config.max_share)

    def model_name(self, call: GenerationCall, cloud_model: str = "") -> str:
        """The cloud's name for the model: the route's, else the cloud section's, else ours."""
        return cloud_model or self.cloud.config.openai_model or call.model

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(30.0, read=READ_TIMEOUT_S),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        return self._client

    async def start(
        self,
        call: GenerationCall,
        cloud_model: str,
        timeout_s: float,
        prompt_tokens: int = 0,
    ) -> CloudStream:
        """Send `call` to the cloud and wait for its first piece; `prompt_tokens`: the edge's
        count, used when the cloud reports no usage."""
        config = self.cloud.config
        model = self.model_name(call, cloud_model)
        path, body = request_body(call, model)
        url = config.openai_base_url.rstrip("/") + path
        headers = {"Accept": "text/event-stream"}
        token = bearer(self.cloud.metadata())
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.cloud.window.sent()  # counted when sent: a failed call still took share
        self.metrics.cloud_requests.labels(call.model).inc()
        client = self._http()
        try:
            response = await asyncio.wait_for(
                client.send(
                    client.build_request("POST", url, json=body, headers=headers), stream=True
                ),
                max(timeout_s, 0.001),
            )
        except TimeoutError:
            raise DeadlineError(
                f"the cloud fallback did not answer for model '{call.model}' in time"
            ) from None
        except httpx.HTTPError as exc:
            raise ForwardedError(
                grpc.StatusCode.UNAVAILABLE,
                f"the cloud fallback at {config.openai_base_url} cannot be reached: "
                f"{type(exc).__name__} {exc}",
            ) from None
        if response.status_code != 200:
            raw = await response.aread()
            await response.aclose()
            raise _status_error(call.model, response.status_code, raw)

        def on_end(usage: Usage, failed: bool) -> None:
            self.tokens.add(call.model, CLOUD, usage.prompt_tokens, usage.completion_tokens)
            usd = token_cost_usd(config, usage)
            if usd:
                self.metrics.cloud_cost.labels(call.model).inc(usd)

        stream = CloudStream(response, call, on_end, prompt_tokens)
        await stream.first(timeout_s)
        self.metrics.routed(call.model, ROUTE_CLOUD).inc()
        return stream

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
