"""ArtifactStore against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hatswarm_agent.control.artifacts import (
    ArtifactStore,
    ArtifactTooLargeError,
    DigestMismatchError,
    FetchError,
    SignatureError,
)
from hatswarm_agent.control.signing import generate_keypair, sign_digest

pytestmark = pytest.mark.integration


class ArtifactServer:
    """Serves `files` by path and counts the GETs each path received."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        files, hits = self.files, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] += 1
                if self.path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("Location", self.path.removeprefix("/redirect"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def add(self, path: str, body: bytes) -> tuple[str, str]:
        self.files[path] = body
        return self.url + path, hashlib.sha256(body).hexdigest()


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    srv = ArtifactServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "cache", max_bytes=10_000_000)


async def test_download_verify_and_cache_hit(server: ArtifactServer, store: ArtifactStore) -> None:
    body = bytes(range(256)) * 5000  # > 1 MiB: several chunks
    uri, digest = server.add("/models/resnet.hef", body)
    path = await store.fetch(uri, sha256=digest)
    assert path.read_bytes() == body
    assert path.name == digest
    again = await store.fetch(uri, sha256=digest)
    assert again == path
    assert server.hits["/models/resnet.hef"] == 1  # the second fetch did not download


async def test_cache_hit_survives_restart_and_server_loss(
    server: ArtifactServer, tmp_path: Path, store: ArtifactStore
) -> None:
    uri, digest = server.add("/m.onnx", b"onnx bytes")
    await store.fetch(uri, sha256=digest)
    server.files.clear()  # the registry is gone; the node keeps serving from its cache
    reopened = ArtifactStore(tmp_path / "cache", max_bytes=10_000_000)
    assert (await reopened.fetch(uri, sha256=digest)).read_bytes() == b"onnx bytes"
    assert server.hits["/m.onnx"] == 1


async def test_http_digest_mismatch_is_refused(
    server: ArtifactServer, tmp_path: Path, store: ArtifactStore
) -> None:
    uri, served = server.add("/m.onnx", b"what the server has")
    expected = hashlib.sha256(b"what was published").hexdigest()
    with pytest.raises(DigestMismatchError, match=f"its sha256 is not {expected}") as err:
        await store.fetch(uri, sha256=expected)
    assert served not in str(err.value)  # never the digest of content that failed to verify
    assert store.total_bytes() == 0
    assert list((tmp_path / "cache" / "sha256").iterdir()) == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_http_404(server: ArtifactServer, store: ArtifactStore) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        await store.fetch(server.url + "/absent.hef", sha256="a" * 64)


async def test_connection_refused_is_a_fetch_error(store: ArtifactStore) -> None:
    with pytest.raises(FetchError, match="fetch failed"):
        await store.fetch("http://127.0.0.1:1/m.hef", sha256="a" * 64)


async def test_redirect_is_followed(server: ArtifactServer, store: ArtifactStore) -> None:
    _, digest = server.add("/blob", b"behind a redirect")
    path = await store.fetch(server.url + "/redirect/blob", sha256=digest)
    assert path.read_bytes() == b"behind a redirect"


async def test_bad_signature_refused_before_download(
    server: ArtifactServer, store: ArtifactStore
) -> None:
    uri, digest = server.add("/m.hef", b"hef")
    _, public_pem = generate_keypair()
    other_private, _ = generate_keypair()
    with pytest.raises(SignatureError, match="bad signature"):
        await store.fetch(uri, digest, sign_digest(other_private, digest), public_pem)
    assert server.hits["/m.hef"] == 0


async def test_good_signature_over_http(server: ArtifactServer, store: ArtifactStore) -> None:
    uri, digest = server.add("/m.hef", b"hef")
    private_pem, public_pem = generate_keypair()
    path = await store.fetch(uri, digest, sign_digest(private_pem, digest), public_pem)
    assert path.read_bytes() == b"hef"


async def test_download_size_cap(server: ArtifactServer, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cache", max_bytes=1000, max_download_bytes=100)
    uri, digest = server.add("/big", b"x" * 101)
    with pytest.raises(ArtifactTooLargeError):
        await store.fetch(uri, sha256=digest)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_concurrent_fetches_download_once(
    server: ArtifactServer, store: ArtifactStore
) -> None:
    uri, digest = server.add("/shared.hef", b"y" * 300_000)
    paths = await asyncio.gather(*(store.fetch(uri, sha256=digest) for _ in range(8)))
    assert len(set(paths)) == 1
    assert server.hits["/shared.hef"] == 1


async def test_lru_eviction_over_http(server: ArtifactServer, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cache", max_bytes=250)
    a_uri, a = server.add("/a", b"a" * 100)
    b_uri, b = server.add("/b", b"b" * 100)
    c_uri, c = server.add("/c", b"c" * 100)
    await store.fetch(a_uri, sha256=a)
    store.pin(a)
    await store.fetch(b_uri, sha256=b)
    await store.fetch(c_uri, sha256=c)
    assert store.path_for(b) is None
    assert store.path_for(a) is not None
    assert store.path_for(c) is not None
    await store.fetch(b_uri, sha256=b)  # evicted artifacts are downloaded again
    assert server.hits["/b"] == 2
