"""Verified, content-addressed model artifacts on the node's disk.

An agent must keep serving when the control plane (and the registry) are unreachable, so
every artifact it loads lives in a local cache keyed by its sha256: `root/sha256/<hex>`.
A file enters the cache only after its digest (and, when given, an ed25519 signature over the
digest) has been verified; downloads stream into `root/tmp/` while hashing and are moved in
with `os.replace`, so a crash never leaves a half-written artifact under a valid name.

The cache is private to the agent: folders 0700, artifacts 0400 (owner read-only), and an
error about content that failed verification never names that content's digest. Backends load
an artifact through `view`: a folder holding only that artifact, so a model file can never
reach another cached file (ONNX external data resolves relative to the model's folder).

The cache is bounded by `max_bytes`: least-recently-used artifacts are evicted first, where
"use" is the file's mtime, touched on every fetch, so the order survives restarts. Pinned
artifacts (the ones loaded models run from) are never evicted. Callers that are about to load
an artifact should pin its digest before fetching it, so nothing can evict it in between.
One process owns a cache root: pins and sizes are kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import BinaryIO

import httpx

from hatswarm_agent.control.signing import InvalidSignatureError, normalize_sha256, verify_digest

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # 1 MiB: large enough to hash fast, small enough to keep the loop responsive
DIR_MODE = 0o700
FILE_MODE = 0o400


class ArtifactError(Exception):
    """An artifact could not be fetched or verified; the message says why (shown to users)."""


class UnsupportedSchemeError(ArtifactError):
    """The URI's scheme is not file://, http://, https:// or a plain path."""


class FetchError(ArtifactError):
    """The artifact could not be read or downloaded (HTTP status, network, missing file)."""


class DigestMismatchError(ArtifactError):
    """The content's sha256 differs from the one requested."""


class SignatureError(ArtifactError):
    """The signature is missing, malformed, or not made by the given key over the digest."""


class ArtifactTooLargeError(ArtifactError):
    """The artifact exceeds the per-download cap or the whole cache budget."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (HEFs and ONNX files can be hundreds of MB)."""
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def redact_uri(uri: str) -> str:
    """The URI without credentials or query (presigned URLs carry tokens there) for messages."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme or parts.scheme == "file":
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{query}"


def _write_hashing(f: BinaryIO, hasher: hashlib._Hash, data: bytes) -> None:
    f.write(data)
    hasher.update(data)


def fsync_dir(path: Path) -> None:
    """Make a rename durable: the Pi may lose power right after os.replace."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ArtifactStore:
    """Fetches artifacts by URI into a bounded, content-addressed, verified local cache."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        *,
        max_download_bytes: int | None = None,
        connect_timeout_s: float = 10.0,
        io_timeout_s: float = 60.0,
        download_timeout_s: float = 1800.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """Open (and create) the cache under `root`.

        `max_download_bytes` caps one artifact (default: `max_bytes`); `io_timeout_s` bounds
        each network wait, `download_timeout_s` the whole transfer. `http_client` lets the
        agent supply its own TLS settings; the store never closes a client it was given.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_download_bytes = min(max_download_bytes or max_bytes, max_bytes)
        self._timeout = httpx.Timeout(io_timeout_s, connect=connect_timeout_s)
        self._download_timeout_s = download_timeout_s
        self._client = http_client
        self._objects = self.root / "sha256"
        self._tmp = self.root / "tmp"
        self._views = self.root / "views"
        self._private_folders()
        # Partial downloads of a previous run. A live transfer writes at least once per I/O
        # timeout, so only files idle for longer are stale (and safe to remove).
        idle_ns = int((io_timeout_s + 60) * 1e9)
        for stale in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if time.time_ns() - stale.stat().st_mtime_ns > idle_ns:
                    stale.unlink()
        self._sizes: dict[str, int] = {}
        self._last_use_ns = 0
        for entry in self._objects.iterdir():
            try:
                digest = normalize_sha256(entry.name)
            except ValueError:
                log.warning("ignoring foreign file in artifact cache: %s", entry)
                continue
            if digest == entry.name and entry.is_file():
                info = entry.stat()
                self._sizes[digest] = info.st_size
                self._last_use_ns = max(self._last_use_ns, info.st_mtime_ns)
        self._pins: Counter[str] = Counter()
        self._locks: dict[str, asyncio.Lock] = {}
        # Digests re-hashed by this process: a cached file is fully re-verified once per run.
        self._verified: set[str] = set()

    # -- bookkeeping -------------------------------------------------------------------------

    def pin(self, sha256: str) -> None:
        """Protect an artifact from eviction; counted, so two models sharing it need two unpins."""
        self._pins[normalize_sha256(sha256)] += 1

    def unpin(self, sha256: str) -> None:
        """Release one pin; the artifact becomes evictable when no pin is left."""
        digest = normalize_sha256(sha256)
        if self._pins[digest] <= 1:
            self._pins.pop(digest, None)
        else:
            self._pins[digest] -= 1

    def is_pinned(self, sha256: str) -> bool:
        return self._pins[normalize_sha256(sha256)] > 0

    def total_bytes(self) -> int:
        """Bytes held by cached artifacts (what NodeStatus reports as artifact_cache_bytes)."""
        return sum(self._sizes.values())

    def path_for(self, sha256: str) -> Path | None:
        """The cached file for a digest, without any fetching or verification; None if absent."""
        digest = normalize_sha256(sha256)
        return self._objects / digest if digest in self._sizes else None

    # -- fetch -------------------------------------------------------------------------------

    async def fetch(
        self, uri: str, sha256: str = "", signature: str = "", public_key: str = ""
    ) -> Path:
        """Return the verified local file for `uri`, downloading it only when not cached.

        `sha256` is required for http(s) and optional for local files (then it is computed:
        only the agent's own configuration does that; control-plane loads always name a
        digest, and whose keys count is decided before, by sources.py, which never passes a
        key from a request). A signature, when given, is checked on every call, cache hit or
        not.
        """
        try:
            digest = normalize_sha256(sha256) if sha256 else ""
        except ValueError as exc:
            raise ArtifactError(str(exc)) from exc
        local = self._local_path(uri)
        if local is None and not digest:
            raise ArtifactError(f"sha256 is required for {redact_uri(uri)}")
        if public_key and not signature:
            raise SignatureError("a public key was given but the artifact has no signature")
        if signature and digest:
            self._check_signature(public_key, digest, signature)  # fail before any download

        if digest:
            async with self._lock(digest):
                cached = await self._cached(digest)
                if cached is not None:
                    return cached
                tmp = self._new_tmp()
                try:
                    if local is None:
                        actual = await self._download(uri, tmp)
                    else:
                        actual = await self._copy_local(local, tmp)
                    if actual != digest:  # never say what the content's digest is
                        raise DigestMismatchError(
                            f"digest mismatch for {redact_uri(uri)}: its sha256 is not {digest}"
                        )
                    return self._admit(tmp, digest)
                finally:
                    tmp.unlink(missing_ok=True)

        assert local is not None
        tmp = self._new_tmp()
        try:
            actual = await self._copy_local(local, tmp)
            if signature:
                self._check_signature(public_key, actual, signature)
            async with self._lock(actual):
                cached = await self._cached(actual)
                if cached is not None:
                    return cached
                return self._admit(tmp, actual)
        finally:
            tmp.unlink(missing_ok=True)

    def _lock(self, digest: str) -> asyncio.Lock:
        return self._locks.setdefault(digest, asyncio.Lock())

    @staticmethod
    def _check_signature(public_key: str, digest: str, signature: str) -> None:
        try:
            verify_digest(public_key, digest, signature)
        except InvalidSignatureError as exc:
            raise SignatureError(str(exc)) from exc

    @staticmethod
    def _local_path(uri: str) -> Path | None:
        """The path a file:// URI or plain path names; None for http(s); raises otherwise."""
        if "://" not in uri:
            if not uri:
                raise UnsupportedSchemeError("empty artifact URI")
            return Path(uri).expanduser().resolve()
        parts = urllib.parse.urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            return None
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise UnsupportedSchemeError(f"file URI names a remote host: {uri}")
            return Path(urllib.parse.unquote(parts.path))
        raise UnsupportedSchemeError(
            f"unsupported scheme {scheme!r} in {redact_uri(uri)}: use file://, http:// or https://"
        )

    async def _cached(self, digest: str) -> Path | None:
        """The cached file, touched as just used; re-hashed once per process against bit rot."""
        path = self._objects / digest
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            self._sizes.pop(digest, None)
            return None
        if digest not in self._verified:
            actual = await asyncio.to_thread(file_sha256, path)
            if actual != digest:
                log.warning("cached artifact %s is corrupt; fetching again", digest)
                path.unlink(missing_ok=True)
                self._drop_view(digest)
                self._sizes.pop(digest, None)
                return None
            self._verified.add(digest)
        self._sizes[digest] = size
        self._touch(path)
        return path

    def _touch(self, path: Path) -> None:
        """Record a use as the file's mtime: the LRU order then survives restarts.

        Times are kept strictly increasing, so two uses within one clock tick still order.
        """
        now = max(time.time_ns(), self._last_use_ns + 1_000)
        os.utime(path, ns=(now, now))
        self._last_use_ns = now

    def _new_tmp(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        os.close(fd)
        return Path(name)

    def _too_large(self, uri: str, size: int) -> ArtifactTooLargeError:
        return ArtifactTooLargeError(
            f"artifact {redact_uri(uri)} is larger than the limit "
            f"({size} > {self.max_download_bytes} bytes)"
        )

    async def _copy_local(self, source: Path, tmp: Path) -> str:
        """Copy a local file into the cache's tmp dir while hashing it; the hex digest out.

        Copying (not linking) means a later change to the source cannot alter what was verified.
        """

        def copy() -> str:
            info = source.stat()
            if not stat.S_ISREG(info.st_mode):
                raise FetchError(f"fetch failed: {source} is not a regular file")
            size = info.st_size
            if size > self.max_download_bytes:
                raise self._too_large(str(source), size)
            hasher = hashlib.sha256()
            copied = 0
            with source.open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    copied += len(chunk)
                    if copied > self.max_download_bytes:
                        raise self._too_large(str(source), copied)
                    _write_hashing(dst, hasher, chunk)
                dst.flush()
                os.fsync(dst.fileno())
            return hasher.hexdigest()

        try:
            return await asyncio.to_thread(copy)
        except FileNotFoundError as exc:
            raise FetchError(f"fetch failed: no such file {source}") from exc
        except OSError as exc:
            raise FetchError(f"fetch failed: cannot read {source}: {exc}") from exc

    async def _download(self, uri: str, tmp: Path) -> str:
        """Stream an http(s) artifact into `tmp` while hashing it; the hex digest out."""
        shown = redact_uri(uri)
        client = self._client or httpx.AsyncClient(timeout=self._timeout, follow_redirects=True)
        try:
            async with asyncio.timeout(self._download_timeout_s):
                async with client.stream("GET", uri) as response:
                    if response.status_code != httpx.codes.OK:
                        raise FetchError(
                            f"fetch failed: HTTP {response.status_code} "
                            f"{response.reason_phrase} for {shown}"
                        )
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.max_download_bytes:
                        raise self._too_large(uri, int(declared))
                    hasher = hashlib.sha256()
                    received = 0
                    with tmp.open("wb") as f:
                        async for chunk in response.aiter_bytes(_CHUNK):
                            received += len(chunk)
                            if received > self.max_download_bytes:
                                raise self._too_large(uri, received)
                            await asyncio.to_thread(_write_hashing, f, hasher, chunk)
                        f.flush()
                        await asyncio.to_thread(os.fsync, f.fileno())
                    return hasher.hexdigest()
        except TimeoutError as exc:
            raise FetchError(
                f"fetch failed: {shown} took longer than {self._download_timeout_s:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"fetch failed: {type(exc).__name__} {exc} for {shown}") from exc
        except OSError as exc:
            raise FetchError(f"fetch failed: cannot write {shown} to the cache: {exc}") from exc
        finally:
            if self._client is None:
                await client.aclose()

    def _admit(self, tmp: Path, digest: str) -> Path:
        """Move a verified temp file to its content address, then evict down to the budget."""
        size = tmp.stat().st_size
        if size > self.max_bytes:
            raise ArtifactTooLargeError(
                f"artifact {digest} ({size} bytes) is larger than the whole cache "
                f"({self.max_bytes} bytes)"
            )
        dest = self._objects / digest
        tmp.chmod(FILE_MODE)  # a verified artifact is immutable, and the agent's alone
        os.replace(tmp, dest)
        fsync_dir(self._objects)
        self._touch(dest)
        self._sizes[digest] = size
        self._verified.add(digest)
        self._evict(keep=digest)
        return dest

    def _evict(self, keep: str) -> None:
        """Delete least-recently-used unpinned artifacts until the cache fits its budget."""
        if self.total_bytes() <= self.max_bytes:
            return
        candidates: list[tuple[int, str]] = []
        for digest in list(self._sizes):
            if digest == keep or self._pins[digest] > 0:
                continue
            try:
                candidates.append(((self._objects / digest).stat().st_mtime_ns, digest))
            except FileNotFoundError:
                self._sizes.pop(digest, None)
        for _, digest in sorted(candidates):
            if self.total_bytes() <= self.max_bytes:
                break
            (self._objects / digest).unlink(missing_ok=True)
            self._drop_view(digest)
            self._sizes.pop(digest, None)
            self._verified.discard(digest)
            log.info("evicted artifact %s from the cache", digest)
        if self.total_bytes() > self.max_bytes:
            log.warning(
                "artifact cache holds %d bytes, over its %d byte budget: the rest is pinned",
                self.total_bytes(),
                self.max_bytes,
            )

    # -- privacy and isolation ---------------------------------------------------------------

    def _private_folders(self) -> None:
        """Create the cache's folders 0700 (tightening those an older agent left 0755), and
        start with no views (they are made again on demand)."""
        for folder in (self.root, self._objects, self._tmp, self._views):
            folder.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            folder.chmod(DIR_MODE)
        for view in self._views.iterdir():
            shutil.rmtree(view, ignore_errors=True)
        for entry in self._objects.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_file() and stat.S_IMODE(entry.stat().st_mode) != FILE_MODE:
                    entry.chmod(FILE_MODE)

    def view(self, path: Path) -> Path:
        """The cached artifact `path`, seen from a folder of its own (`views/<digest>/<digest>`,
        a hard link): what a backend loads, so nothing the artifact names relative to its
        folder (ONNX external data) can reach another cached file."""
        digest = normalize_sha256(path.name)
        if path.parent != self._objects:
            raise ValueError(f"{path} is not a cached artifact")
        folder = self._views / digest
        linked = folder / digest
        if linked.exists():
            return linked
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
        try:
            os.link(path, linked)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: a private copy
            shutil.copyfile(path, linked)
            linked.chmod(FILE_MODE)
        return linked

    def _drop_view(self, digest: str) -> None:
        shutil.rmtree(self._views / digest, ignore_errors=True)
