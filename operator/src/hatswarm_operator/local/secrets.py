"""Local mode's Secrets are files: key `key` of Secret `name` is `<state-dir>/secrets/<name>/<key>`.

That covers artifact public keys and `spec.auth.tokenSecretRef`; `spec.auth.tlsSecretRef` is
the folder `<state-dir>/secrets/<name>/` holding `tls.crt`, `tls.key` and `ca.crt`. The agents
are started with those files (`--auth-token-file`, `--tls-*`) and the control loop re-reads
them every tick, so rewriting the token file rotates it for both sides.
"""

from __future__ import annotations

from pathlib import Path

from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.common import SecretKeyRef
from hatswarm_operator.control.credentials import (
    TLS_CA,
    TLS_CERT,
    TLS_KEY,
    AgentCredentials,
    agent_credentials,
    auth_secret_names,
)


def secret_dir(state_dir: Path, name: str) -> Path:
    """The local stand-in for Secret `name`: one file per key."""
    return state_dir / "secrets" / name


def secret_path(state_dir: Path, name: str, key: str) -> Path:
    """The local stand-in for key `key` of Secret `name`."""
    return secret_dir(state_dir, name) / key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        msg = f"{what}: {path} is missing (local mode's Secrets are files)"
        raise FileNotFoundError(msg) from err


def secret_files(state_dir: Path, name: str) -> dict[str, bytes]:
    """Every key of a local Secret (none when its folder is missing)."""
    folder = secret_dir(state_dir, name)
    if not folder.is_dir():
        return {}
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def read_secret_key(state_dir: Path, ref: SecretKeyRef) -> str:
    """One key of a local Secret, as text (an artifact's public key)."""
    return secret_path(state_dir, ref.name, ref.key).read_text().strip()


def local_auth_args(pool: InferencePool, state_dir: Path) -> list[str]:
    """The agents' `--auth-token-file`/`--tls-*` for the pool's `spec.auth`, as local files."""
    auth = pool.spec.auth
    args: list[str] = []
    if auth.token_secret_ref is not None:
        ref = auth.token_secret_ref
        path = secret_path(state_dir, ref.name, ref.key)
        if not _read(path, "spec.auth.tokenSecretRef").strip():
            raise ValueError(f"spec.auth.tokenSecretRef: {path} is empty")
        args += ["--auth-token-file", str(path.resolve())]
    if auth.tls_secret_ref is not None:
        folder = secret_dir(state_dir, auth.tls_secret_ref.name)
        for f in [TLS_CERT, TLS_KEY, *([TLS_CA] * auth.mutual_tls)]:
            _read(folder / f, "spec.auth.tlsSecretRef")
        args += ["--tls-cert", str((folder / TLS_CERT).resolve())]
        args += ["--tls-key", str((folder / TLS_KEY).resolve())]
        if auth.mutual_tls:
            args += ["--tls-ca", str((folder / TLS_CA).resolve())]
    return args


def local_credentials(pool: InferencePool, state_dir: Path) -> AgentCredentials:
    """What the local control loop presents to its agents (as the operator does in a cluster);
    LookupError when a file it needs is missing or empty."""
    auth = pool.spec.auth
    secrets = {name: secret_files(state_dir, name) for name in auth_secret_names(auth)}
    return agent_credentials(auth, secrets, lambda name: str(secret_dir(state_dir, name)))
