"""Bearer tokens and TLS: who may call this agent, and how callers present themselves.

`--auth-token-file` holds the pool token (a mounted Secret). Every RPC but health and
reflection must carry `authorization: Bearer <token>`, entry requests and forwarded hops alike
(a hop marker alone proves nothing). The file is re-read when it changes, so a rotated Secret
takes effect without a restart. TLS uses one set of files both ways: the server's certificate
and key, and with a CA, client certificates are required (mTLS); the same files are this
agent's client credentials toward its peers. `bearer_metadata` and `open_channel` are the one
way any hatswarm client (peer hops, the cloud fallback, the operator) builds its call metadata
and its channels.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

OPEN_SERVICES = (
    "/" + health_pb2.DESCRIPTOR.services_by_name["Health"].full_name + "/",
    "/" + reflection.SERVICE_NAME + "/",
    "/grpc.reflection.v1.ServerReflection/",
)


Metadata = tuple[tuple[str, str], ...]


def bearer_metadata(token: str) -> Metadata:
    """`authorization: Bearer <token>` call metadata; none for an empty token."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def open_channel(
    address: str,
    tls: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    *,
    server_name: str | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel: TLS with `tls` credentials, else plaintext.

    `server_name` overrides the name the server's certificate is checked against (default:
    the host dialled).
    """
    opts = list(options)
    if tls is None:
        return grpc.aio.insecure_channel(address, options=opts)
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(address, tls, options=opts)


class TokenFile:
    """A secret in a file, re-read whenever its mtime, size or inode change."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def token(self) -> str:
        """The current token ('' when the file is missing or empty)."""
        try:
            st = os.stat(self.path)
        except OSError:
            self._stamp, self._token = None, ""
            return ""
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                self._token = self.path.read_text().strip()
            except OSError:
                self._token = ""
            self._stamp = stamp
        return self._token

    def metadata(self) -> Metadata:
        return bearer_metadata(self.token())


def bearer(metadata: Any) -> str:
    """The bearer token in a call's metadata, '' when there is none."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def check(expected: str, presented: str) -> bool:
    """Constant-time comparison; an empty expected token (unreadable file) admits nobody."""
    return bool(expected) and hmac.compare_digest(expected.encode(), presented.encode())


def _refuse(message: str) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(deny)


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """UNAUTHENTICATED unless the call presents the pool token; health and reflection stay open."""

    def __init__(self, tokens: TokenFile) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(OPEN_SERVICES):
            return await continuation(handler_call_details)
        presented = bearer(handler_call_details.invocation_metadata)
        if not presented:
            return _refuse("missing bearer token (metadata 'authorization: Bearer <token>')")
        if not check(self._tokens.token(), presented):
            return _refuse("invalid bearer token")
        return await continuation(handler_call_details)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: this agent's certificate and key, and optionally a CA (then mTLS)."""

    cert: Path
    key: Path
    ca: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        ca = self.ca.read_bytes() if self.ca else None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Toward peers: trust the CA (else the system roots), present our certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca else None,
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )
