"""How the operator proves itself to a pool's agents (`spec.auth`), and how it checks them.

Three identities (README "Security model"): the **control token** only the operator and the
agents hold (Secret `hatswarm-control-<pool>`, generated when absent: delete it to rotate),
the **inference tokens** clients present (`spec.auth.tokenSecretRef`, else a generated
`hatswarm-clients-<pool>`, none only when `unauthenticatedInference`), and the agents' peer
credential, derived from the control token on the agents themselves.

Both adapters read and generate the same Secrets, from different places: the kopf operator
from the Kubernetes API, `hatswarm up` from files under its state dir. Either way the contents
go through :func:`agent_credentials`, so a pool's auth means the same thing in both modes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from hatswarm_agent.protocol.auth import bearer_metadata, open_channel

from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.common import SecretKeyRef

Metadata = tuple[tuple[str, str], ...]
SecretContents = Mapping[str, Mapping[str, bytes]]
"""Secret name -> key -> value: the Secrets a pool's auth names, as read."""

TLS_CERT, TLS_KEY, TLS_CA = "tls.crt", "tls.key", "ca.crt"
"""The keys of a kubernetes.io/tls Secret, and the files `hatswarm up` reads for one."""

CLOUD_TOKEN_DIR = "/var/run/hatswarm/cloud-token"
"""Where an agent finds the cloud fallback's token (the DaemonSet mounts the Secret there)."""
CLOUD_TOKEN_NAME = "cloud"
"""The name the routing table gives the cloud token (`--cloud-token cloud=FILE` on the agent)."""


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


TOKEN_KEY = "token"
"""The key of a generated token Secret."""


def control_secret_name(pool: str) -> str:
    """The Secret holding a pool's control token (generated; only the agents mount it)."""
    return f"hatswarm-control-{pool}"


def clients_secret_name(pool: str) -> str:
    """The Secret holding a pool's generated inference token (for its clients)."""
    return f"hatswarm-clients-{pool}"


def control_token_ref(pool: InferencePool) -> SecretKeyRef:
    return SecretKeyRef(name=control_secret_name(pool.metadata.name), key=TOKEN_KEY)


def inference_token_ref(pool: InferencePool) -> SecretKeyRef | None:
    """Where the pool's inference tokens are: `spec.auth.tokenSecretRef`, else the generated
    Secret; None only when the pool explicitly serves inference without a token."""
    auth = pool.spec.auth
    if auth.token_secret_ref is not None:
        return auth.token_secret_ref
    if auth.unauthenticated_inference:
        return None
    return SecretKeyRef(name=clients_secret_name(pool.metadata.name), key=TOKEN_KEY)


def generated_secrets(pool: InferencePool) -> list[str]:
    """The token Secrets the operator creates when they are absent (never overwrites)."""
    names = [control_secret_name(pool.metadata.name)]
    auth = pool.spec.auth
    if auth.token_secret_ref is None and not auth.unauthenticated_inference:
        names.append(clients_secret_name(pool.metadata.name))
    return names


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe: fits a header and a file line)."""
    return secrets.token_urlsafe(32)


def auth_secret_names(pool: InferencePool) -> list[str]:
    """The Secrets the operator reads for its own credentials, each once: the control token,
    and the TLS Secret when there is one."""
    names = [control_secret_name(pool.metadata.name)]
    if pool.spec.auth.tls_secret_ref is not None:
        names.append(pool.spec.auth.tls_secret_ref.name)
    return list(dict.fromkeys(names))


def agent_credentials(
    pool: InferencePool,
    secrets: SecretContents,
    describe: Callable[[str], str] = lambda name: f"secret {name}",
) -> AgentCredentials:
    """What the operator presents to a pool's agents, from the contents of its Secrets.

    The control Secret gives the bearer token (the first line of its key). The TLS Secret
    (kubernetes.io/tls) gives the CA the agents' certificates are checked against (`ca.crt`;
    the system roots when it has none) and, with `mutualTls`, the client certificate: the
    operator presents the pool's own `tls.crt`/`tls.key`, as the agents do to each other.
    Raises LookupError naming what is missing; `describe` says where a Secret lives.
    """
    auth = pool.spec.auth
    ref = control_token_ref(pool)
    data = secrets.get(ref.name, {})
    if ref.key not in data:
        raise LookupError(f"{describe(ref.name)} has no key {ref.key!r}")
    lines = [t.strip() for t in data[ref.key].decode().splitlines() if t.strip()]
    if not lines:
        raise LookupError(f"{describe(ref.name)}: key {ref.key!r} is empty")
    token = lines[0]
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
