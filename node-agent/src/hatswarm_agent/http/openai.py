"""The OpenAI-compatible door: /v1/chat/completions, /v1/completions, /v1/models, /v1/embeddings.

What the official `openai` client and the frameworks built on it send and expect: streaming as
server-sent events (`data: {chunk}` lines, then `data: [DONE]`), usage (prompt and completion
tokens) in every answer (streamed: on the chunk that carries the finish reason), errors as
`{"error": {"message", "type", "param", "code"}}` with the HTTP status of the error. A stream
that breaks after its first token (the generating node was lost) ends with an error event,
which the `openai` client raises, never with a silently short answer. Embeddings come as floats
or, as the `openai` client asks by default, base64 of little-endian float32.

The answer's end also carries `timings` as llama.cpp's server reports them (`prompt_n`,
`prompt_ms`, `predicted_n`, `predicted_ms` and rates) when the node that ran the generation
measured its runtime's own time (backends' `Timings`): the prompt's part runs to the first
piece of text, so a client's time to first token minus `prompt_ms` is what the agent added.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import web

from hatswarm_agent.backends.generation import GenerationParams, Message, Timings, Usage
from hatswarm_agent.http.common import (
    HttpError,
    Services,
    TokenStreamResponse,
    field,
    http_error,
    json_body,
    model_name,
    node_headers,
)
from hatswarm_agent.http.kserve import infer_texts
from hatswarm_agent.protocol.wire import SESSION_HEADER
from hatswarm_agent.serving.generation import (
    CallContext,
    GenerationCall,
    PieceStream,
    ready_pieces,
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def error_body(error: HttpError) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {
        "error": {
            "message": error.message,
            "type": ERROR_TYPES.get(error.status, "server_error"),
            "param": None,
            "code": error.reason,
        }
    }


def end_json(stream: PieceStream) -> dict[str, Any]:
    """What an answer's end carries besides its text: usage, and timings when measured."""
    usage = stream.usage
    out: dict[str, Any] = {"usage": usage_json(usage)}
    if stream.timings is not None:
        out["timings"] = timings_json(stream.timings, usage.prompt_tokens)
    return out


def timings_json(timings: Timings, prompt_tokens: int) -> dict[str, float]:
    """llama.cpp server's `timings` object (milliseconds and per-second rates)."""
    prompt_ms, predicted_ms = 1000 * timings.prompt_s, 1000 * timings.decode_s
    predicted = timings.decode_tokens
    return {
        "prompt_n": prompt_tokens,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / prompt_tokens, 3) if prompt_tokens else 0.0,
        "prompt_per_second": round(1000 * prompt_tokens / prompt_ms, 3) if prompt_ms else 0.0,
        "predicted_n": predicted,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / predicted, 3) if predicted else 0.0,
        "predicted_per_second": round(1000 * predicted / predicted_ms, 3) if predicted_ms else 0.0,
    }


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def chat_messages(body: dict[str, Any]) -> list[Message]:
    """`messages` as plain {role, content} strings; text parts of a content list are joined."""
    raw = field(body, "messages", list)
    if not raw:
        raise HttpError(400, "'messages' must be a non-empty list")
    messages: list[Message] = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise HttpError(400, f"messages[{i}] must be an object")
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise HttpError(400, f"messages[{i}]: content part {kind!r} is not supported")
                texts.append(str(part.get("text", "")))
            content = "".join(texts)
        elif content is None:
            content = ""
        if not isinstance(role, str) or not role or not isinstance(content, str):
            raise HttpError(400, f"messages[{i}] needs a string 'role' and 'content'")
        messages.append({"role": role, "content": content})
    return messages


def check_unsupported(body: dict[str, Any]) -> None:
    """Fields whose meaning this server cannot honour: refused, not silently ignored."""
    n = body.get("n")
    if n is not None and n != 1:
        raise HttpError(400, f"'n' must be 1 (one choice per request), got {n}")
    if body.get("logprobs") not in (None, False, 0):
        raise HttpError(400, "'logprobs' is not supported")
    if body.get("tools"):
        raise HttpError(400, "'tools' (function calling) is not supported")
    if body.get("best_of") not in (None, 1):
        raise HttpError(400, "'best_of' is not supported")
    if body.get("echo"):
        raise HttpError(400, "'echo' is not supported")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise HttpError(400, f"'response_format' {response_format.get('type')!r} is not supported")


def session(request: web.Request, body: dict[str, Any]) -> str:
    """The conversation's id for routing affinity: the X-Session-Id header, else OpenAI's
    `user` field ("" when neither is there: the prompt's prefix decides)."""
    header = request.headers.get(SESSION_HEADER, "")
    if header:
        return header[:256]
    user = body.get("user")
    return user[:256] if isinstance(user, str) else ""


def sampling(body: dict[str, Any]) -> GenerationParams:
    params = dict(body)
    params.pop("num_predict", None)  # an Ollama name: not OpenAI's
    return GenerationParams.from_mapping(params)


_SENTINEL = "\x00hatswarm-text\x00"


def sse_template(doc: Callable[[str], dict[str, Any]]) -> Callable[[str], bytes]:
    """The SSE event of `doc(text)`, encoded once: per chunk only the text is encoded (the same
    bytes json.dumps of the whole document gives), not the whole document again."""
    head, tail = json.dumps(doc(_SENTINEL)).split(json.dumps(_SENTINEL))
    before, after = b"data: " + head.encode(), tail.encode() + b"\n\n"
    return lambda text: before + json.dumps(text).encode() + after


async def sse(
    request: web.Request,
    stream: PieceStream,
    chunk: Callable[[str], bytes | None],
    end: Callable[[PieceStream], dict[str, Any]],
) -> web.StreamResponse:
    """Pieces as server-sent events, `chunk(text)` each (None: nothing to send); the end (or an
    error event) then `data: [DONE]`. Pieces that arrived while the last chunk was written go
    out together as one chunk (see `ready_pieces`); the usage at the end counts tokens."""
    response = TokenStreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            **node_headers(stream),
        }
    )
    await response.prepare(request)
    try:
        async for piece in stream:
            more = ready_pieces(stream)
            text = piece.text + "".join([p.text for p in more]) if more else piece.text
            data = chunk(text)
            if data is not None:
                await response.write(data)
        final = end(stream)
    except Exception as exc:
        final = error_body(http_error(exc))
    await response.write_eof(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
    return response


class OpenAIDoor:
    """The /v1 routes."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_post("/v1/embeddings", self.embeddings)

    async def _start(self, call: GenerationCall) -> PieceStream:
        return await self.services.generate(call, CallContext())

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        model = model_name(body)
        check_unsupported(body)
        call = GenerationCall(
            model, "", chat_messages(body), sampling(body), session(request, body)
        )
        streaming = bool(field(body, "stream", bool, False))
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        stream = await self._start(call)

        def chunk(delta: dict[str, str], reason: str | None = None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
                ],
            }

        if streaming:
            first = True
            opening = sse_template(lambda text: chunk({"role": "assistant", "content": text}))
            following = sse_template(lambda text: chunk({"content": text}))

            def piece_chunk(text: str) -> bytes | None:
                nonlocal first
                if first:
                    first = False
                    return opening(text)
                return following(text) if text else None

            def end(s: PieceStream) -> dict[str, Any]:
                return {**chunk({}, s.finish_reason), **end_json(s)}

            try:
                return await sse(request, stream, piece_chunk, end)
            finally:
                await stream.aclose()
        text = await _collect(stream)
        return web.json_response(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": stream.finish_reason,
                    }
                ],
                **end_json(stream),
            },
            headers=node_headers(stream),
        )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        model = model_name(body)
        check_unsupported(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise HttpError(400, "'prompt' must be a string (one prompt per request)")
        call = GenerationCall(model, "", prompt, sampling(body), session(request, body))
        streaming = bool(field(body, "stream", bool, False))
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        stream = await self._start(call)

        def chunk(text: str, reason: str | None = None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
            }

        if streaming:

            def end(s: PieceStream) -> dict[str, Any]:
                return {**chunk("", s.finish_reason), **end_json(s)}

            text_chunk = sse_template(chunk)
            try:
                return await sse(
                    request, stream, lambda text: text_chunk(text) if text else None, end
                )
            finally:
                await stream.aclose()
        text = await _collect(stream)
        return web.json_response(
            {**chunk(text, stream.finish_reason), **end_json(stream)},
            headers=node_headers(stream),
        )

    def _model_names(self) -> list[str]:
        registry = self.services.dataplane.registry
        local = {e.name for e in registry.all() if e.ready}
        return sorted(local | set(self.services.pool_models()))

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [_model_json(name) for name in self._model_names()]}
        )

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self._model_names():
            raise HttpError(404, f"unknown model '{name}'", "not_found")
        return web.json_response(_model_json(name))

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        model = model_name(body)
        texts, ids = _embedding_inputs(body.get("input"))
        encoding = field(body, "encoding_format", str, "float")
        if encoding not in ("float", "base64"):
            raise HttpError(400, f"'encoding_format' must be float or base64, got {encoding!r}")
        services = self.services
        if services.generations.local_embedding(model) is not None:
            _, result = await services.generations.embed(model, "", texts or ids)
            vectors, prompt_tokens = result.vectors, result.prompt_tokens
        elif ids:
            raise HttpError(
                400, "token-id input is only served by an agent holding the model: send text"
            )
        else:
            vectors, prompt_tokens = await infer_texts(services, model, texts)
        dimensions = field(body, "dimensions", int)
        if dimensions is not None and dimensions != vectors.shape[1]:
            raise HttpError(
                400, f"'dimensions' must be the model's {vectors.shape[1]}, got {dimensions}"
            )
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(row, encoding)}
            for i, row in enumerate(vectors)
        ]
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        return web.json_response({"object": "list", "data": data, "model": model, "usage": usage})


def _model_json(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "hatswarm"}


def _embedding_inputs(raw: Any) -> tuple[list[str], list[list[int]]]:
    """OpenAI's `input`: a string, strings, token ids, or lists of token ids."""
    if isinstance(raw, str):
        return [raw], []
    if isinstance(raw, list) and raw:
        if all(isinstance(x, str) for x in raw):
            return list(raw), []
        if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
            return [], [list(raw)]
        if all(
            isinstance(x, list)
            and x
            and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
            for x in raw
        ):
            return [], [list(x) for x in raw]
    raise HttpError(
        400, "'input' must be a string, a list of strings, or token ids (a list of integers)"
    )


def _vector(row: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in row]


async def _collect(stream: PieceStream) -> str:
    """A whole completion (non-streaming requests); the stream is closed either way."""
    try:
        return "".join([piece.text async for piece in stream])
    finally:
        await stream.aclose()
