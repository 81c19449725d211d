"""The Ollama door: /api/generate, /api/chat, /api/tags (and /api/version), as Ollama and Hailo's
`hailo-ollama` speak them, so tools written for those work against a hatswarm pool.

Streaming is the default (`"stream": false` for one answer) and is NDJSON: one JSON object a
line, the last with `"done": true`, the done reason and the token counts (`prompt_eval_count`,
`eval_count`) and durations in nanoseconds. Sampling parameters come in `options` (`num_predict`,
`temperature`, `top_p`, `top_k`, `seed`, `stop`). `/api/generate` applies the model's chat
template to the prompt (with `system` as a system message) unless `"raw": true`, as Ollama does.
An empty prompt (or message list) only asks whether the model is there: `done_reason` "load".
A model name may carry a tag (`tiny:latest`): `latest` is the newest version, any other tag
names a version. Errors are `{"error": "..."}` with the HTTP status of the error; a stream that
breaks after its first token ends with an `{"error": ...}` line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from hatswarm_agent import __version__
from hatswarm_agent.backends.generation import GenerationParams, Message, Prompt
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
from hatswarm_agent.http.openai import chat_messages, session
from hatswarm_agent.serving.generation import (
    CallContext,
    GenerationCall,
    PieceStream,
    ready_pieces,
)


def error_body(error: HttpError) -> dict[str, Any]:
    return {"error": error.message}


def split_tag(name: str) -> tuple[str, str]:
    """`model:tag` -> (model, version); the tag `latest` (or none) is the newest version."""
    model, _, tag = name.partition(":")
    return model, "" if tag in ("", "latest") else tag


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def options(body: dict[str, Any]) -> GenerationParams:
    raw = field(body, "options", dict, {})
    return GenerationParams.from_mapping(raw)


def check_unsupported(body: dict[str, Any]) -> None:
    if body.get("images"):
        raise HttpError(400, "'images' are not supported: this model takes text")
    if body.get("format"):
        raise HttpError(400, "'format' (structured output) is not supported")
    if body.get("tools"):
        raise HttpError(400, "'tools' are not supported")


class OllamaDoor:
    """The /api routes."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/chat", self.chat)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/version", self.version)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        name = model_name(body)
        check_unsupported(body)
        prompt_text = field(body, "prompt", str, "")
        system = field(body, "system", str, "")
        if not prompt_text and not system:
            return self._loaded(name, {"response": ""})
        prompt: Prompt
        if field(body, "raw", bool, False):
            prompt = prompt_text
        else:
            messages: list[Message] = [{"role": "system", "content": system}] if system else []
            prompt = [*messages, {"role": "user", "content": prompt_text}]

        def line(piece: str) -> dict[str, Any]:
            return {"model": name, "created_at": _now(), "response": piece, "done": False}

        return await self._answer(request, body, name, prompt, line)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        name = model_name(body)
        check_unsupported(body)
        if field(body, "messages", list, []) == []:
            return self._loaded(name, {"message": {"role": "assistant", "content": ""}})
        prompt = chat_messages(body)

        def line(piece: str) -> dict[str, Any]:
            return {
                "model": name,
                "created_at": _now(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }

        return await self._answer(request, body, name, prompt, line)

    def _loaded(self, name: str, empty: dict[str, Any]) -> web.Response:
        """Ollama's answer to an empty request: the model is known (here or in the pool)."""
        model, version = split_tag(name)
        if model not in self.services.pool_models():
            self.services.dataplane.registry.get(model, version)  # NOT_FOUND when unknown
        return web.json_response(
            {"model": name, "created_at": _now(), **empty, "done": True, "done_reason": "load"}
        )

    async def _answer(
        self,
        request: web.Request,
        body: dict[str, Any],
        name: str,
        prompt: Prompt,
        line: Callable[[str], dict[str, Any]],
    ) -> web.StreamResponse:
        model, version = split_tag(name)
        started = time.perf_counter_ns()
        call = GenerationCall(model, version, prompt, options(body), session(request, {}))
        stream = await self.services.generate(call, CallContext())
        try:
            if field(body, "stream", bool, True):
                return await self._ndjson(request, stream, line, started)
            text = "".join([piece.text async for piece in stream])
            return web.json_response(
                {**line(text), **_done(stream, started)}, headers=node_headers(stream)
            )
        finally:
            await stream.aclose()

    async def _ndjson(
        self,
        request: web.Request,
        stream: PieceStream,
        line: Callable[[str], dict[str, Any]],
        started: int,
    ) -> web.StreamResponse:
        response = TokenStreamResponse(
            headers={"Content-Type": "application/x-ndjson", **node_headers(stream)}
        )
        await response.prepare(request)
        first_ns: int | None = None
        try:
            async for piece in stream:
                if first_ns is None and piece.tokens:
                    first_ns = time.perf_counter_ns()
                # What arrived while the last line was written goes out with it (one line).
                more = ready_pieces(stream)
                text = piece.text + "".join([p.text for p in more]) if more else piece.text
                if text:
                    await response.write(_encode(line(text)))
            final = {**line(""), **_done(stream, started, first_ns)}
        except Exception as exc:
            final = error_body(http_error(exc))
        await response.write_eof(_encode(final))
        return response

    async def tags(self, request: web.Request) -> web.Response:
        registry = self.services.dataplane.registry
        local = {e.name: e for e in registry.all() if e.ready}
        names = sorted(set(local) | set(self.services.pool_models()))
        models = []
        for name in names:
            entry = local.get(name)
            models.append(
                {
                    "name": f"{name}:latest",
                    "model": f"{name}:latest",
                    "modified_at": _iso(entry.loaded_at_unix_ms) if entry else _now(),
                    "size": 0,
                    "digest": entry.sha256 if entry else "",
                    "details": {"format": entry.backend if entry else "", "family": ""},
                }
            )
        return web.json_response({"models": models})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": __version__})


def _iso(unix_ms: int) -> str:
    return datetime.fromtimestamp(unix_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _done(stream: PieceStream, started: int, first_ns: int | None = None) -> dict[str, Any]:
    """The last object: counts and durations (ns). The evaluation durations are the runtime's
    own time when the node measured it (as Ollama reports them), else the door's view."""
    now = time.perf_counter_ns()
    first = first_ns or now
    usage = stream.usage
    prompt_ns, eval_ns = first - started, now - first
    if stream.timings is not None:
        prompt_ns = round(stream.timings.prompt_s * 1e9)
        eval_ns = round(stream.timings.decode_s * 1e9)
    return {
        "done": True,
        "done_reason": stream.finish_reason or "stop",
        "total_duration": now - started,
        "load_duration": 0,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": usage.completion_tokens,
        "eval_duration": eval_ns,
    }


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"
