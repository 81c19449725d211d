"""How the operator proves itself to a pool's agents (`spec.auth`), and how it checks them.

Both adapters read the same Secrets, from different places: the kopf operator from the
Kubernetes API, `hatswarm up` from files under its state dir. Either way the contents go
through :func:`agent_credentials`, so a pool's auth means the same thing in both modes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from hatswarm_agent.protocol.auth import bearer_metadata, open_channel

from hatswarm_operator.api.inferencepool import Auth

Metadata = tuple[tuple[str, str], ...]
SecretContents = Mapping[str, Mapping[str, bytes]]
"""Secret name -> key -> value: the Secrets a pool's auth names, as read."""

TLS_CERT, TLS_KEY, TLS_CA = "tls.crt", "tls.key", "ca.crt"
"""The keys of a kubernetes.io/tls Secret, and the files `hatswarm up` reads for one."""

CLOUD_TOKEN_DIR = "/var/run/hatswarm/cloud-token"
"""Where an agent finds the cloud fallback's token (the DaemonSet mounts the Secret there)."""


@dataclass(frozen=True)
class AgentCredentials:
    """How the operator proves itself to a pool's agents, and how it checks them.

    `tls` on with no `ca_pem` trusts the system roots. `server_name` overrides the name the
    agent's certificate is checked against (default: the host dialled, the pod IP, which is
    what the agents check each other against on peer hops too).
    """

    token: str = ""
    tls: bool = False
    ca_pem: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    server_name: str | None = None

    def channel_key(self) -> tuple[object, ...]:
        """What a channel is built from: a change here needs new channels, a token does not."""
        return (self.tls, self.ca_pem, self.cert_pem, self.key_pem, self.server_name)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )

    def open_channel(
        self, address: str, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        """A channel to one agent: TLS (with the pool's CA and client cert) or plaintext."""
        tls = self.channel_credentials() if self.tls else None
        return open_channel(address, tls, options, server_name=self.server_name)

    def metadata(self) -> Metadata:
        return bearer_metadata(self.token)

    def __repr__(self) -> str:  # never print the token or the key
        return (
            f"AgentCredentials(token={'set' if self.token else 'none'}, tls={self.tls}, "
            f"ca={self.ca_pem is not None}, client_cert={self.cert_pem is not None})"
        )


def auth_secret_names(auth: Auth) -> list[str]:
    """The Secrets `spec.auth` names, each once: what to read before :func:`agent_credentials`."""
    refs = (auth.token_secret_ref, auth.tls_secret_ref)
    return list(dict.fromkeys(r.name for r in refs if r is not None))


def agent_credentials(
    auth: Auth,
    secrets: SecretContents,
    describe: Callable[[str], str] = lambda name: f"secret {name}",
) -> AgentCredentials:
    """What the operator presents to a pool's agents, from the contents of `spec.auth`'s Secrets.

    The token Secret gives the bearer token. The TLS Secret (kubernetes.io/tls) gives the CA
    the agents' certificates are checked against (`ca.crt`; the system roots when it has
    none) and, with `mutualTls`, the client certificate: the operator presents the pool's own
    `tls.crt`/`tls.key`, as the agents do to each other. Raises LookupError naming what is
    missing; `describe` says where a Secret lives (for that message).
    """
    token = ""
    if auth.token_secret_ref is not None:
        ref = auth.token_secret_ref
        data = secrets.get(ref.name, {})
        if ref.key not in data:
            raise LookupError(f"{describe(ref.name)} has no key {ref.key!r}")
        token = data[ref.key].decode().strip()
        if not token:
            raise LookupError(f"{describe(ref.name)}: key {ref.key!r} is empty")
    if auth.tls_secret_ref is None:
        return AgentCredentials(token=token)
    name = auth.tls_secret_ref.name
    tls = secrets.get(name, {})
    cert, key = tls.get(TLS_CERT), tls.get(TLS_KEY)
    if auth.mutual_tls and not (cert and key):
        raise LookupError(f"{describe(name)} lacks tls.crt/tls.key for mutualTls")
    return AgentCredentials(
        token=token,
        tls=True,
        ca_pem=tls.get(TLS_CA) or None,
        cert_pem=cert if auth.mutual_tls else None,
        key_pem=key if auth.mutual_tls else None,
    )
