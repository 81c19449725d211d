"""Ed25519 signatures over artifact digests.

A publisher signs the raw 32-byte sha256 digest of an artifact (not the file itself), so the
agent can check a signature before it downloads anything and re-check it on every load at no
cost. Keys travel as PEM or as base64 of the raw 32 bytes (what `LoadModelRequest.public_key`
carries). Which keys are trusted is the agent's own configuration (`TrustedKeys`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class InvalidSignatureError(ValueError):
    """A signature, key or digest could not be verified; the message says which and why."""


def normalize_sha256(sha256_hex: str) -> str:
    """Lowercase hex digest, or ValueError: a malformed digest must never reach a file path."""
    digest = sha256_hex.strip().lower()
    if not _SHA256_HEX.fullmatch(digest):
        raise ValueError(f"sha256 must be 64 hex characters, got {sha256_hex!r}")
    return digest


def generate_keypair() -> tuple[str, str]:
    """A fresh (private PEM, public PEM) pair for tests and for publishers' docs."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def public_key_raw_b64(public_key: str) -> str:
    """The base64 form of the raw 32-byte key, which fits in a CRD field on one line."""
    raw = load_public_key(public_key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode()


def sign_digest(private_key_pem: str | bytes, sha256_hex: str) -> str:
    """Sign the raw digest of an artifact with an ed25519 private key (PEM); base64 out."""
    data = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("private key is not an ed25519 key")
    return base64.b64encode(key.sign(bytes.fromhex(normalize_sha256(sha256_hex)))).decode()


def load_public_key(public_key: str) -> Ed25519PublicKey:
    """Parse a PEM or raw-base64 ed25519 public key; InvalidSignatureError says what is wrong."""
    text = public_key.strip()
    if not text:
        raise InvalidSignatureError("no public key to verify the signature against")
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise InvalidSignatureError(f"public key is not valid PEM: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidSignatureError("public key is not an ed25519 key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignatureError("public key is neither PEM nor valid base64") from exc
    if len(raw) != 32:
        raise InvalidSignatureError(f"raw ed25519 public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_digest(public_key: str, sha256_hex: str, signature_b64: str) -> None:
    """Raise InvalidSignatureError unless `signature_b64` signs the digest under the key."""
    key = load_public_key(public_key)
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignatureError("bad signature: not valid base64") from exc
    if len(signature) != 64:
        raise InvalidSignatureError(
            f"bad signature: ed25519 signatures are 64 bytes, got {len(signature)}"
        )
    try:
        digest = bytes.fromhex(normalize_sha256(sha256_hex))
    except ValueError as exc:
        raise InvalidSignatureError(str(exc)) from exc
    try:
        key.verify(signature, digest)
    except InvalidSignature as exc:
        raise InvalidSignatureError(
            f"bad signature: not made by the given public key over sha256 {digest.hex()}"
        ) from exc


def raw_key(public_key: str) -> bytes:
    """The 32 raw bytes of an ed25519 public key (PEM or base64): how two keys compare."""
    return load_public_key(public_key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


class TrustedKeys:
    """The ed25519 keys this agent accepts signatures from: configured at start (files or
    folders of files, e.g. the pool's mounted Secret), re-read when they change.

    The trust anchor is the agent's own configuration: a key that comes with a request can only
    name one of these, never add to them.
    """

    def __init__(self, paths: Sequence[Path] = ()) -> None:
        self.paths = [Path(p) for p in paths]
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._keys: dict[bytes, Ed25519PublicKey] = {}
        self._errors: list[str] = []

    def _files(self) -> list[Path]:
        files: list[Path] = []
        for path in self.paths:
            if path.is_dir():  # a mounted Secret: one key a file (kubelet's ..data is hidden)
                files += sorted(
                    f for f in path.iterdir() if not f.name.startswith(".") and f.is_file()
                )
            else:
                files.append(path)
        return files

    def keys(self) -> dict[bytes, Ed25519PublicKey]:
        """Raw key bytes -> key, for every readable, valid key (invalid ones are logged)."""
        files = self._files()
        stamp = []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            stamp.append((str(f), st.st_mtime_ns, st.st_size))
        if tuple(stamp) != self._stamp:
            keys: dict[bytes, Ed25519PublicKey] = {}
            errors = []
            for f in files:
                try:
                    key = load_public_key(f.read_text())
                except (OSError, UnicodeDecodeError, InvalidSignatureError) as exc:
                    errors.append(f"{f}: {exc}")
                    continue
                keys[
                    key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                ] = key
            self._keys, self._errors, self._stamp = keys, errors, tuple(stamp)
            for error in errors:
                log.warning("trusted key ignored: %s", error)
        return self._keys

    def verify(self, sha256_hex: str, signature_b64: str, hint: str = "") -> None:
        """Raise InvalidSignatureError unless a trusted key signed the digest.

        `hint` (a key from the request) only narrows the search: it must be a trusted key.
        """
        keys = self.keys()
        if not keys:
            raise InvalidSignatureError(
                "signature cannot be verified: this agent trusts no signing keys "
                "(start it with --trusted-keys)"
            )
        candidates = list(keys.values())
        if hint.strip():
            raw = raw_key(hint)
            if raw not in keys:
                raise InvalidSignatureError(
                    "signature refused: the request's public key is not one this agent "
                    "trusts (--trusted-keys)"
                )
            candidates = [keys[raw]]
        encoded = [
            base64.b64encode(
                k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            ).decode()
            for k in candidates
        ]
        for key in encoded:
            try:
                verify_digest(key, sha256_hex, signature_b64)
                return
            except InvalidSignatureError as exc:
                last = exc
                if "not made by" not in str(exc):
                    raise
        raise InvalidSignatureError(
            "bad signature: not made by any key this agent trusts"
        ) from last
