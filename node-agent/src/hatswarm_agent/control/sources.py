"""Where artifacts may come from, and whose signatures count: the agent's own configuration.

A LoadModel names a URI, a digest and maybe a signature; the control plane relays them from
EdgeModel specs, which namespace users write. So what the agent may read and whom it trusts is
decided here, from flags given at start, never by the request:

- `file://` (and plain paths) only under the allow-listed roots (`--allow-file-root`, e.g. a
  hostPath model folder), after resolving symlinks: `file:///var/run/secrets/...` is refused
  before anything is read. The agent's own command-line models (`--model`, `--model-dir`) are
  its configuration and may name any file.
- A digest is required for every control-plane load: the cache admits nothing that was not
  verified against a digest somebody vouched for.
- Signatures verify against the trusted keys (`--trusted-keys`); the request's public key can
  only name one of them. With `--require-signatures` an unsigned load is refused.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hatswarm_agent.control.artifacts import SignatureError
from hatswarm_agent.control.signing import InvalidSignatureError, TrustedKeys, normalize_sha256
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.serving.errors import InvalidInputError


class SourceRefusedError(InvalidInputError):
    """A URI the agent's configuration does not allow (INVALID_ARGUMENT, nothing was read)."""


def local_path(uri: str) -> Path | None:
    """The file a file:// URI or a plain path names (None for http(s) and other schemes)."""
    if "://" not in uri:
        return Path(uri).expanduser()
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() != "file":
        return None
    return Path(urllib.parse.unquote(parts.path))


@dataclass
class ArtifactSources:
    """The agent's rules for artifact sources and signatures (see the module docstring)."""

    file_roots: Sequence[Path] = ()
    trusted: TrustedKeys = field(default_factory=TrustedKeys)
    require_signatures: bool = False

    def __post_init__(self) -> None:
        self.file_roots = tuple(Path(os.path.realpath(r)) for r in self.file_roots)

    def confine(self, uri: str) -> str:
        """`uri` with a local path resolved (symlinks followed) and checked against the roots;
        http(s) URIs unchanged. SourceRefusedError when the path is outside every root."""
        if "\x00" in uri:  # no path holds one; os.path would raise ValueError on it
            raise SourceRefusedError("the artifact URI holds a NUL character")
        path = local_path(uri)
        if path is None:
            scheme = urllib.parse.urlsplit(uri).scheme.lower()
            if scheme not in ("http", "https"):
                raise SourceRefusedError(
                    f"unsupported scheme {scheme[:16]!r}: artifacts come by file://, http:// "
                    "or https://"
                )
            return uri
        if "://" in uri and urllib.parse.urlsplit(uri).netloc not in ("", "localhost"):
            raise SourceRefusedError("a file:// URI may not name a remote host")
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(root) for root in self.file_roots):
            roots = ", ".join(str(r) for r in self.file_roots) or "none configured"
            raise SourceRefusedError(
                f"file {str(path)[:256]} is outside the agent's allowed file roots ({roots}): "
                "start the agent with --allow-file-root DIR, or serve it over https"
            )
        return str(real)

    def check(self, request: control_pb2.LoadModelRequest) -> str:
        """Check a control-plane load's sources before anything is fetched (the signature is
        checked by `verify_signature`, also before fetching); the URI to fetch out."""
        uri = self.confine(request.uri)
        if not request.sha256:
            raise SourceRefusedError(
                f"LoadModel '{request.name}' needs a sha256: the agent caches only verified "
                "artifacts"
            )
        try:
            normalize_sha256(request.sha256)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        for adapter in request.adapters:
            self.confine(adapter.uri)
            if not adapter.sha256:
                raise SourceRefusedError(
                    f"adapter '{adapter.name}' of '{request.name}' needs a sha256"
                )
        return uri

    def verify_signature(self, request: control_pb2.LoadModelRequest, digest: str) -> None:
        """SignatureError unless the signature (when given, or required) is a trusted key's."""
        if not request.signature:
            if self.require_signatures:
                raise SignatureError(
                    f"this agent requires signed artifacts and '{request.name}' has no signature"
                )
            if request.public_key:
                raise SignatureError("a public key was given but the artifact has no signature")
            return
        try:
            self.trusted.verify(digest, request.signature, request.public_key)
        except InvalidSignatureError as exc:
            raise SignatureError(str(exc)) from exc
