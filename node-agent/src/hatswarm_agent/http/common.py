"""What the three HTTP doors share: the services they call, auth, JSON bodies, status codes.

Domain errors (serving/errors.py: the same ones gRPC turns into status codes) become HTTP
statuses here, in one table, so every door answers a full model with 429 and an unknown one
with 404; each door only shapes the error body its clients expect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from hatswarm_agent.protocol.auth import AgentAuth
from hatswarm_agent.serving.dataplane import DataPlane
from hatswarm_agent.serving.errors import status_for
from hatswarm_agent.serving.generation import Generate, Generations, PieceStream
from hatswarm_agent.serving.servicer import Infer

log = logging.getLogger(__name__)


class TokenStreamResponse(web.StreamResponse):
    """A streamed response whose headers go out with its first chunk, not alone before it.

    Every write to a socket whose reader waits costs a wake-up of the reader's process (0.3 ms
    each here, most of a tiny model's streamed first token). aiohttp sends a StreamResponse's
    headers at `prepare`; this one keeps them until the first write (what aiohttp does itself
    for a whole `web.Response`), and the doors end a stream with `write_eof(last)`, one send
    for the last event and the chunked terminator."""

    _send_headers_immediately = False


# gRPC status -> HTTP status (what grpc-gateway and KServe use).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@dataclass
class Services:
    """What the doors call: wired by server.py, the same callables the gRPC servicer gets."""

    dataplane: DataPlane  # the registry and the serving state (ready or not)
    infer: Infer  # one OIP request: here, on a peer, from the cache or in the cloud
    generate: Generate  # one generation: here or on a peer
    generations: Generations  # this node's generative and embedding models
    pool_models: Callable[[], Iterable[str]]  # model names the routing table knows
    auth: AgentAuth | None = None  # who may infer (None: open)


class HttpError(Exception):
    """An error with its HTTP status, its gRPC-style reason and a message for the caller."""

    def __init__(self, status: int, message: str, reason: str = "invalid_argument") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def http_error(exc: BaseException) -> HttpError:
    """Any exception a door let escape, as an HttpError (500 for what is not the caller's)."""
    if isinstance(exc, HttpError):
        return exc
    code, message, reason = status_for(exc)
    status = HTTP_STATUS.get(code, 500)
    if status == 500:
        log.error("HTTP request failed: %s", message, exc_info=exc)
    return HttpError(status, message, reason)


def inference_denial(auth: AgentAuth | None, headers: Iterable[tuple[str, str]]) -> str:
    """Why a request with these headers may not infer ("" when it may): the one place the HTTP
    doors ask, the same rule as the gRPC interceptor (AgentAuth.inference_denial)."""
    if auth is None:
        return ""
    denial = auth.inference_denial(list(headers))
    return "" if denial is None else denial.message


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or HttpError 400 saying what is wrong with it."""
    try:
        raw = await request.read()
        doc = json.loads(raw) if raw else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise HttpError(400, "the request body must be a JSON object")
    return doc


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
               dict: "an object", list: "a list"}  # fmt: skip


def field(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None
) -> Any:
    """`body[name]` when it has type `kind` (default when absent or null), else 400."""
    value = body.get(name)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(_TYPE_WORDS.get(k, k.__name__) for k in kinds)
        raise HttpError(400, f"'{name}' must be {expected}, got {json.dumps(value)[:80]}")
    return value


def model_name(body: dict[str, Any]) -> str:
    name = field(body, "model", str, "")
    if not name:
        raise HttpError(400, "'model' is required")
    return str(name)


def node_headers(stream: PieceStream) -> dict[str, str]:
    """Where a generation runs, for the response headers."""
    return {"x-hatswarm-node": stream.node, "x-hatswarm-route": stream.route}
