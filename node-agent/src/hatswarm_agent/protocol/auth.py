"""Who may call this agent, and how callers present themselves: three identities, TLS.

- **Control** (`--control-token-file`, the token only the operator mounts): the one credential
  that opens `hatswarm.v1.AgentControl` (load, unload, routing tables, node status). Without
  the flag, AgentControl answers only callers on this host (loopback), never the network.
- **Inference** (`--auth-token-file`, repeatable; a file may hold several tokens, one a line):
  the tokens clients present for the OIP service. They never open control. Without any,
  inference is open: the operator passes them unless a pool explicitly allows it.
- **Peer** (derived): forwarded hops carry `x-hatswarm-peer: HMAC(control token)`, never the
  client's token, so a peer (or anything that pretends to be one) learns nothing that opens
  control or that a client holds. During a control-token rotation both the new and the previous
  token's credential are sent and accepted for `PEER_ROTATION_GRACE_S`.

Health (the kubelet's gRPC probe) and reflection stay open; a per-model health check needs an
inference credential when inference does. Token files are re-read when they change, so a
rotated Secret takes effect without a restart. TLS uses one set of files both ways: the
server's certificate and key, and with a CA, client certificates are required (mTLS); the same
files are this agent's client credentials toward its peers. `bearer_metadata` and
`open_channel` are the one way any hatswarm client (peer hops, the cloud fallback, the
operator) builds its call metadata and its channels; `AgentAuth` is the one place that decides
who may do what (the gRPC interceptor here and any other front door call it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from hatswarm_agent.protocol.v1 import control_pb2

HEALTH_PREFIX = "/" + health_pb2.DESCRIPTOR.services_by_name["Health"].full_name + "/"
REFLECTION_PREFIXES = ("/" + reflection.SERVICE_NAME + "/", "/grpc.reflection.v1.ServerReflection/")
OPEN_SERVICES = (HEALTH_PREFIX, *REFLECTION_PREFIXES)
CONTROL_SERVICE = control_pb2.DESCRIPTOR.services_by_name["AgentControl"].full_name
CONTROL_PREFIX = f"/{CONTROL_SERVICE}/"

PEER_KEY = "x-hatswarm-peer"
"""Metadata key of the pool-internal credential a forwarded hop carries."""
PEER_ROTATION_GRACE_S = 600.0
"""How long the previous control token's peer credential stays valid after a rotation: every
agent's kubelet refreshes the mounted Secret within this, so hops never fail on the skew."""
_PEER_CONTEXT = b"hatswarm peer hop v1"


Metadata = tuple[tuple[str, str], ...]


class MetadataSource(Protocol):
    """Anything that gives call metadata (a TokenFile, AgentAuth's peer credential)."""

    def metadata(self) -> Metadata: ...


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
    """Secrets in a file (one a line; blank lines and `#` comments ignored), re-read whenever
    its mtime, size or inode change. Tokens that a change removed are remembered with the
    time they went (`previous`), so a rotation can be honoured for a grace period."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: tuple[str, ...] = ()
        self._retired: dict[str, float] = {}

    def tokens(self) -> tuple[str, ...]:
        """The current tokens (none when the file is missing, unreadable or empty)."""
        try:
            st = os.stat(self.path)
        except OSError:
            self._replace(())
            self._stamp = None
            return ()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                text = self.path.read_text()
            except (OSError, UnicodeDecodeError):
                text = ""
            lines = (line.strip() for line in text.splitlines())
            self._replace(tuple(t for t in lines if t and not t.startswith("#")))
            self._stamp = stamp
        return self._tokens

    def _replace(self, tokens: tuple[str, ...]) -> None:
        now = self._clock()
        for gone in set(self._tokens) - set(tokens):
            self._retired[gone] = now
        for back in set(tokens) & set(self._retired):
            del self._retired[back]
        self._tokens = tokens

    def token(self) -> str:
        """The first current token ('' when there is none): what a client presents."""
        tokens = self.tokens()
        return tokens[0] if tokens else ""

    def previous(self, within_s: float) -> tuple[str, ...]:
        """Tokens the file held until less than `within_s` seconds ago."""
        self.tokens()
        now = self._clock()
        for token, gone in list(self._retired.items()):
            if now - gone > within_s:
                del self._retired[token]
        return tuple(self._retired)

    def admits(self, presented: str) -> bool:
        """Whether `presented` is one of the current tokens (constant time per token)."""
        return any(check(token, presented) for token in self.tokens())

    def metadata(self) -> Metadata:
        return bearer_metadata(self.token())


def bearer(metadata: Any) -> str:
    """The bearer token in a call's metadata (or HTTP headers), '' when there is none."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def metadata_values(metadata: Any, key: str) -> list[str]:
    """Every value of `key` in a call's metadata (gRPC allows a key more than once); names
    compare case-insensitively, as HTTP header names do."""
    out = []
    for k, value in metadata or ():
        if k.lower() == key:
            out.append(value.decode(errors="replace") if isinstance(value, bytes) else str(value))
    return out


def check(expected: str, presented: str) -> bool:
    """Constant-time comparison; an empty expected token (unreadable file) admits nobody."""
    return bool(expected) and hmac.compare_digest(expected.encode(), presented.encode())


def peer_credential(control_token: str) -> str:
    """The pool-internal credential of forwarded hops: an HMAC of the control token, so
    holding it opens nothing but a hop, and it cannot be turned back into the token."""
    return hmac.new(control_token.encode(), _PEER_CONTEXT, hashlib.sha256).hexdigest()


def is_loopback_peer(peer: str) -> bool:
    """Whether a gRPC peer string (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`, `unix:...`) is
    this host."""
    kind, _, rest = peer.partition(":")
    if kind in ("unix", "unix-abstract"):
        return True
    if kind == "ipv6" and rest.startswith("["):
        host = rest[1 : rest.find("]")]
    elif kind == "ipv4":
        host = rest.rpartition(":")[0]
    else:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass(frozen=True)
class Denial:
    """Why a call is refused: its status code and a message that names what is missing."""

    code: grpc.StatusCode
    message: str


@dataclass
class AgentAuth:
    """Who may do what on this agent: the one decision every front door asks.

    `control`: the control token file (None: AgentControl only from loopback).
    `inference`: the inference token files (empty: inference open to anyone who reaches it).
    """

    control: TokenFile | None = None
    inference: Sequence[TokenFile] = field(default_factory=tuple)

    @property
    def inference_open(self) -> bool:
        return not self.inference

    def control_denial(self, metadata: Any, peer: str = "") -> Denial | None:
        """None when the call carries the control identity (or, without a control token
        configured, comes from this host)."""
        if self.control is None:
            if is_loopback_peer(peer):
                return None
            return Denial(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{CONTROL_SERVICE} takes calls from this host only: the agent was started "
                "without --control-token-file",
            )
        presented = bearer(metadata)
        if not presented:
            return Denial(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{CONTROL_SERVICE} needs the control plane's token "
                "(metadata 'authorization: Bearer <token>')",
            )
        if self.control.admits(presented):
            return None
        if any(f.admits(presented) for f in self.inference):
            return Denial(
                grpc.StatusCode.PERMISSION_DENIED,
                f"an inference token does not open {CONTROL_SERVICE}",
            )
        return Denial(grpc.StatusCode.UNAUTHENTICATED, "invalid control token")

    def inference_denial(self, metadata: Any) -> Denial | None:
        """None when inference is open or the call carries an inference token, the control
        token (the operator's validation gate) or a valid peer credential (a hop).

        Any front door calls this: gRPC passes its invocation metadata, HTTP its headers as
        (name, value) pairs (e.g. `request.headers.items()`), answering 401 on a denial.
        """
        if self.inference_open:
            return None
        presented = bearer(metadata)
        if presented and (
            any(f.admits(presented) for f in self.inference)
            or (self.control is not None and self.control.admits(presented))
        ):
            return None
        if self.peer_admits(metadata_values(metadata, PEER_KEY)):
            return None
        if not presented:
            return Denial(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing bearer token (metadata 'authorization: Bearer <token>')",
            )
        return Denial(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")

    def _peer_credentials(self) -> list[str]:
        if self.control is None:
            return []
        tokens = [*self.control.tokens(), *self.control.previous(PEER_ROTATION_GRACE_S)]
        return [peer_credential(t) for t in tokens]

    def peer_admits(self, presented: Iterable[str]) -> bool:
        valid = self._peer_credentials()
        return any(check(v, p) for p in presented for v in valid)

    def peer_metadata(self) -> Metadata:
        """What a forwarded hop carries: the peer credential (and, during a rotation, the
        previous one's), never a client's token. Empty without a control token."""
        return tuple((PEER_KEY, c) for c in self._peer_credentials())

    def metadata(self) -> Metadata:
        """`peer_metadata` under the name the forwarder calls."""
        return self.peer_metadata()


def _refusing(handler: grpc.RpcMethodHandler, denial: Denial) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that refuses without parsing the request."""

    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(denial.code, denial.message)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(denial.code, denial.message)
        yield  # pragma: no cover - abort raises

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(deny)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(deny_stream)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(deny)
    return grpc.stream_stream_rpc_method_handler(deny_stream)


def _loopback_only(handler: grpc.RpcMethodHandler, auth: AgentAuth) -> grpc.RpcMethodHandler:
    """Control without a control token: the same handler, for callers on this host only."""
    inner = handler.unary_unary
    if inner is None:
        return _refusing(handler, Denial(grpc.StatusCode.UNIMPLEMENTED, "not a unary call"))

    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        denial = auth.control_denial(context.invocation_metadata(), context.peer())
        if denial is not None:
            await context.abort(denial.code, denial.message)
        return await inner(request, context)

    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


_NAMED_HEALTH = Denial(
    grpc.StatusCode.UNAUTHENTICATED,
    "a per-model health check needs an inference token; the empty service name is open",
)


def _unnamed_health_only(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Health for strangers: the server's own status (service ''), never a model's, so a
    stranger cannot learn which model names exist."""
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        check_inner = handler.unary_unary

        async def check_call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if request.service:
                await context.abort(_NAMED_HEALTH.code, _NAMED_HEALTH.message)
            return await check_inner(request, context)

        return grpc.unary_unary_rpc_method_handler(check_call, **kw)
    if handler.unary_stream is not None:
        watch_inner = handler.unary_stream

        async def watch_call(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if request.service:
                await context.abort(_NAMED_HEALTH.code, _NAMED_HEALTH.message)
            async for item in watch_inner(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(watch_call, **kw)
    return handler


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Applies `AgentAuth` to every gRPC call: control needs the control identity, inference an
    inference credential (when any is configured); health and reflection stay open."""

    def __init__(self, auth: AgentAuth) -> None:
        self._auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if method.startswith(CONTROL_PREFIX):
            if self._auth.control is None:
                return _loopback_only(handler, self._auth)
            denial = self._auth.control_denial(metadata)
        elif method.startswith(HEALTH_PREFIX):
            if self._auth.inference_denial(metadata) is None:
                return handler
            return _unnamed_health_only(handler)
        elif method.startswith(REFLECTION_PREFIXES):
            return handler
        else:
            denial = self._auth.inference_denial(metadata)
        return handler if denial is None else _refusing(handler, denial)


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
