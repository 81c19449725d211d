"""Local mode's Secrets are files: key `key` of Secret `name` is `<state-dir>/secrets/<name>/<key>`.

That covers artifact public keys and `spec.auth.tokenSecretRef`; `spec.auth.tlsSecretRef` is
the folder `<state-dir>/secrets/<name>/` holding `tls.crt`, `tls.key` and `ca.crt`, and
`spec.auth.trustedKeysSecret` a folder of public keys. As the operator does in a cluster,
`hatswarm up` generates the pool's control token (`hatswarm-control-<pool>/token`) and, unless
the pool names its own or serves without, its clients' inference token
(`hatswarm-clients-<pool>/token`) when they are absent: files 0600 in folders 0700, so the
user does nothing and no other local user can read them. The agents are started with those
files (`--control-token-file`, `--auth-token-file`, `--tls-*`, `--trusted-keys`) and the control
loop re-reads them every tick, so rewriting a token file rotates it for both sides.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import SecretKeyRef
from hatswarm_operator.control.credentials import (
    CLOUD_TOKEN_NAME,
    TLS_CA,
    TLS_CERT,
    TLS_KEY,
    TOKEN_KEY,
    AgentCredentials,
    agent_credentials,
    auth_secret_names,
    control_token_ref,
    generated_secrets,
    inference_token_ref,
    new_token,
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


def ensure_local_secrets(pool: InferencePool, state_dir: Path) -> list[Path]:
    """Generate the pool's token files that are absent (never overwriting one); those made."""
    made = []
    for name in generated_secrets(pool):
        path = secret_path(state_dir, name, TOKEN_KEY)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_token() + "\n")
        made.append(path)
    return made


def client_token_file(pool: InferencePool, state_dir: Path) -> Path | None:
    """The file holding the pool's inference tokens (None when it serves anyone)."""
    ref = inference_token_ref(pool)
    return None if ref is None else secret_path(state_dir, ref.name, ref.key)


def client_token(pool: InferencePool, state_dir: Path) -> str:
    """The first inference token a local client presents ('' when the pool serves anyone)."""
    path = client_token_file(pool, state_dir)
    if path is None:
        return ""
    text = _read(path, "inference token").decode()
    return next((t.strip() for t in text.splitlines() if t.strip()), "")


def file_roots(pool: InferencePool, models: Sequence[EdgeModel], state_dir: Path) -> list[Path]:
    """Folders the local agents may read file:// artifacts from: the pool's `fileRoots`, the
    bundled model's folder, and the folders of the file:// artifacts the manifests given to
    `hatswarm up` name (on one machine the user who starts it is the node's admin)."""
    roots = [Path(r) for r in pool.spec.agent.file_roots] + [state_dir / "models"]
    for model in models:
        uris = [a.uri for a in model.spec.artifacts]
        uris += [a.uri for a in model.spec.adapters]
        for uri in uris:
            parts = urllib.parse.urlsplit(uri)
            if parts.scheme == "file":
                roots.append(Path(urllib.parse.unquote(parts.path)).parent)
    return list(dict.fromkeys(roots))


def local_auth_args(
    pool: InferencePool, state_dir: Path, models: Sequence[EdgeModel] = ()
) -> list[str]:
    """The agents' credential and trust flags for the pool's `spec.auth`, as local files
    (generated where the pool leaves them to the operator)."""
    auth = pool.spec.auth
    ensure_local_secrets(pool, state_dir)
    control = control_token_ref(pool)
    args = [
        "--control-token-file",
        str(secret_path(state_dir, control.name, control.key).resolve()),
    ]
    ref = inference_token_ref(pool)
    if ref is not None:
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
    if auth.trusted_keys_secret is not None:
        folder = secret_dir(state_dir, auth.trusted_keys_secret)
        if not folder.is_dir():
            raise FileNotFoundError(f"spec.auth.trustedKeysSecret: {folder} is missing")
        args += ["--trusted-keys", str(folder.resolve())]
    if auth.require_signatures:
        args.append("--require-signatures")
    cloud = pool.spec.cloud_fallback
    if cloud is not None and cloud.token_secret_ref is not None:
        path = secret_path(state_dir, cloud.token_secret_ref.name, cloud.token_secret_ref.key)
        _read(path, "spec.cloudFallback.tokenSecretRef")
        args += ["--cloud-token", f"{CLOUD_TOKEN_NAME}={path.resolve()}"]
    for root in file_roots(pool, models, state_dir):
        args += ["--allow-file-root", str(root)]
    return args


def local_credentials(pool: InferencePool, state_dir: Path) -> AgentCredentials:
    """What the local control loop presents to its agents (as the operator does in a cluster);
    LookupError when a file it needs is missing or empty."""
    secrets = {name: secret_files(state_dir, name) for name in auth_secret_names(pool)}
    return agent_credentials(pool, secrets, lambda name: str(secret_dir(state_dir, name)))
