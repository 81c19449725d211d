"""One aiohttp server for the three doors, on the agent's event loop beside grpc.aio.

Every route but the health checks needs the pool token when the agent has one (`Authorization:
Bearer <token>`, which the `openai` client sends as its API key). One middleware checks it and
turns whatever a door raised into that door's error shape with the right status, so a handler
only raises. With TLS files the server speaks HTTPS with the same certificate as gRPC (and
requires client certificates when a CA is given).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hatswarm_agent.http import kserve, ollama, openai
from hatswarm_agent.http.common import HttpError, Services, http_error, inference_denial
from hatswarm_agent.protocol.auth import TlsFiles

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(path: str, error: HttpError) -> web.Response:
    """The error in the shape the door's clients parse."""
    if path.startswith("/v1/"):
        body: dict[str, Any] = openai.error_body(error)
    elif path.startswith("/api/"):
        body = ollama.error_body(error)
    else:
        body = kserve.error_body(error)
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return web.json_response(body, status=error.status, headers=headers)


def build_app(services: Services) -> web.Application:
    @web.middleware
    async def doors(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        denial = (
            "" if path in OPEN_PATHS else inference_denial(services.auth, request.headers.items())
        )
        if denial:
            return error_response(path, HttpError(401, denial, "unauthenticated"))
        try:
            return await handler(request)
        except web.HTTPException as exc:  # aiohttp's own: unknown route, wrong method
            if exc.status < 400:
                raise
            reason = "not_found" if exc.status == 404 else "invalid_argument"
            message = f"{request.method} {path}: {exc.reason}"
            return error_response(path, HttpError(exc.status, message, reason))
        except Exception as exc:
            return error_response(path, http_error(exc))

    app = web.Application(middlewares=[doors], client_max_size=64 << 20)
    openai.OpenAIDoor(services).add_routes(app)
    ollama.OllamaDoor(services).add_routes(app)
    kserve.KServeDoor(services).add_routes(app)

    async def root(request: web.Request) -> web.Response:
        return web.Response(text="hatswarm-agent is running\n")  # what Ollama answers on /

    app.router.add_get("/", root)
    return app


def ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    if tls.ca is not None:
        context.load_verify_locations(tls.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class HttpServer:
    """The doors on one port; `start` binds (port 0: any free one), `stop` drains."""

    def __init__(self, services: Services, tls: TlsFiles | None = None) -> None:
        self._runner = web.AppRunner(
            build_app(services), handler_cancellation=True, access_log=None
        )
        self._tls = tls
        self.port = 0

    async def start(self, host: str, port: int, grace_seconds: float = 5.0) -> int:
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            host,
            port,
            shutdown_timeout=grace_seconds,
            ssl_context=ssl_context(self._tls) if self._tls else None,
            reuse_address=True,
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()
