"""ArtifactStore on local files: verification, signatures, LRU eviction, pins, dedupe."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path

import pytest
from hatswarm_agent.control.artifacts import (
    ArtifactError,
    ArtifactStore,
    ArtifactTooLargeError,
    DigestMismatchError,
    FetchError,
    SignatureError,
    UnsupportedSchemeError,
)
from hatswarm_agent.control.signing import generate_keypair, public_key_raw_b64, sign_digest


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "cache", max_bytes=1000)


async def test_local_file_is_copied_into_content_address(
    tmp_path: Path, store: ArtifactStore
) -> None:
    src = tmp_path / "model.onnx"
    digest = write(src, b"weights")
    path = await store.fetch(str(src))
    assert path == tmp_path / "cache" / "sha256" / digest
    assert path.read_bytes() == b"weights"
    src.write_bytes(b"changed later")  # the cache holds its own verified copy
    assert (await store.fetch(src.as_uri(), sha256=digest)).read_bytes() == b"weights"
    assert store.total_bytes() == len(b"weights")


async def test_local_sha256_mismatch_is_refused_and_nothing_cached(
    tmp_path: Path, store: ArtifactStore
) -> None:
    src = tmp_path / "model.onnx"
    actual = write(src, b"weights")
    wrong = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(DigestMismatchError, match=f"its sha256 is not {wrong}") as err:
        await store.fetch(src.as_uri(), sha256=wrong)
    assert actual not in str(err.value)  # never the digest of content that failed to verify
    assert list((tmp_path / "cache" / "sha256").iterdir()) == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert store.total_bytes() == 0


async def test_uppercase_digest_is_accepted_and_malformed_refused(
    tmp_path: Path, store: ArtifactStore
) -> None:
    src = tmp_path / "m"
    digest = write(src, b"x")
    assert (await store.fetch(str(src), sha256=digest.upper())).name == digest
    with pytest.raises(ArtifactError, match="64 hex"):
        await store.fetch(str(src), sha256="../../etc/passwd")


@pytest.mark.parametrize(
    "uri", ["s3://bucket/model.hef", "ftp://host/m.onnx", "file://otherhost/m"]
)
async def test_unsupported_scheme(store: ArtifactStore, uri: str) -> None:
    with pytest.raises(UnsupportedSchemeError):
        await store.fetch(uri, sha256="0" * 64)


async def test_missing_local_file(tmp_path: Path, store: ArtifactStore) -> None:
    with pytest.raises(FetchError, match="no such file"):
        await store.fetch(str(tmp_path / "absent.hef"))


async def test_http_requires_sha256(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match="sha256 is required"):
        await store.fetch("http://127.0.0.1:9/model.onnx")


async def test_signature_accepted_with_pem_and_raw_keys(
    tmp_path: Path, store: ArtifactStore
) -> None:
    private_pem, public_pem = generate_keypair()
    src = tmp_path / "m"
    digest = write(src, b"signed weights")
    sig = sign_digest(private_pem, digest)
    assert (await store.fetch(str(src), digest, sig, public_pem)).name == digest
    raw = public_key_raw_b64(public_pem)
    assert len(base64.b64decode(raw)) == 32
    assert (await store.fetch(str(src), digest, sig, raw)).name == digest
    # Without a digest in the request, the signature is checked against the computed one.
    assert (await store.fetch(str(src), "", sig, raw)).name == digest


async def test_signature_refusals(tmp_path: Path, store: ArtifactStore) -> None:
    private_pem, public_pem = generate_keypair()
    _, other_public = generate_keypair()
    src = tmp_path / "m"
    digest = write(src, b"signed weights")
    sig = sign_digest(private_pem, digest)
    tampered = hashlib.sha256(b"tampered").hexdigest()
    tampered_src = tmp_path / "t"
    write(tampered_src, b"tampered")

    with pytest.raises(SignatureError, match="bad signature"):
        await store.fetch(str(src), digest, sig, other_public)  # wrong key
    with pytest.raises(SignatureError, match="bad signature"):
        await store.fetch(str(tampered_src), tampered, sig, public_pem)  # digest not the signed one
    with pytest.raises(SignatureError, match="bad signature"):
        await store.fetch(str(tampered_src), "", sig, public_pem)  # same, digest computed
    with pytest.raises(SignatureError, match="not valid base64"):
        await store.fetch(str(src), digest, "!!not base64!!", public_pem)
    with pytest.raises(SignatureError, match="64 bytes"):
        await store.fetch(str(src), digest, base64.b64encode(b"short").decode(), public_pem)
    with pytest.raises(SignatureError, match="no public key"):
        await store.fetch(str(src), digest, sig, "")
    with pytest.raises(SignatureError, match="no signature"):
        await store.fetch(str(src), digest, "", public_pem)
    with pytest.raises(SignatureError, match="32 bytes"):
        await store.fetch(str(src), digest, sig, base64.b64encode(b"short key").decode())
    # Nothing that failed verification was admitted.
    assert store.total_bytes() == 0
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_signature_checked_on_cache_hit(tmp_path: Path, store: ArtifactStore) -> None:
    private_pem, _ = generate_keypair()
    _, other_public = generate_keypair()
    src = tmp_path / "m"
    digest = write(src, b"weights")
    await store.fetch(str(src), digest)
    with pytest.raises(SignatureError):
        await store.fetch(str(src), digest, sign_digest(private_pem, digest), other_public)


async def test_artifact_bigger_than_cache_is_an_error(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cache", max_bytes=10)
    src = tmp_path / "big"
    write(src, b"x" * 11)
    with pytest.raises(ArtifactTooLargeError, match="larger than the limit"):
        await store.fetch(str(src))
    assert store.total_bytes() == 0


async def test_lru_eviction_honours_pins(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cache", max_bytes=300)
    digests = {}
    for name in "abcd":
        digests[name] = write(tmp_path / name, name.encode() * 100)
    for name in "abc":
        await store.fetch(str(tmp_path / name))
    assert store.total_bytes() == 300
    store.pin(digests["a"])  # a is the oldest but in use
    await store.fetch(str(tmp_path / "b"))  # b becomes most recently used
    await store.fetch(str(tmp_path / "d"))  # over budget: evict the LRU unpinned, which is c
    assert store.path_for(digests["c"]) is None
    assert not (tmp_path / "cache" / "sha256" / digests["c"]).exists()
    for name in "abd":
        assert store.path_for(digests[name]) is not None
    assert store.total_bytes() == 300

    store.unpin(digests["a"])
    await store.fetch(str(tmp_path / "c"))  # now a is the LRU and unpinned
    assert store.path_for(digests["a"]) is None
    assert {p.name for p in (tmp_path / "cache" / "sha256").iterdir()} == {
        digests["b"],
        digests["c"],
        digests["d"],
    }


async def test_pins_are_counted(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cache", max_bytes=100)
    a = write(tmp_path / "a", b"a" * 100)
    write(tmp_path / "b", b"b" * 100)
    await store.fetch(str(tmp_path / "a"))
    store.pin(a)
    store.pin(a)
    store.unpin(a)
    assert store.is_pinned(a)
    await store.fetch(str(tmp_path / "b"))  # pinned a stays, the cache runs over budget
    assert store.path_for(a) is not None
    assert store.total_bytes() == 200


async def test_lru_order_survives_restart(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "cache", max_bytes=300)
    digests = {n: write(tmp_path / n, n.encode() * 100) for n in "abcd"}
    for name in "abca":  # a used last, b is the LRU
        await store.fetch(str(tmp_path / name))
    stale = tmp_path / "cache" / "tmp" / "stale.part"
    stale.write_bytes(b"half a download")
    os.utime(stale, (0, 0))  # idle since 1970: its writer is long gone
    live = tmp_path / "cache" / "tmp" / "live.part"
    live.write_bytes(b"being written by another process")

    reopened = ArtifactStore(tmp_path / "cache", max_bytes=300)
    assert reopened.total_bytes() == 300
    assert [p.name for p in (tmp_path / "cache" / "tmp").iterdir()] == ["live.part"]
    await reopened.fetch(str(tmp_path / "d"))
    assert reopened.path_for(digests["b"]) is None
    assert all(reopened.path_for(digests[n]) is not None for n in "acd")


async def test_corrupt_cached_file_is_fetched_again(tmp_path: Path) -> None:
    src = tmp_path / "m"
    digest = write(src, b"good")
    await ArtifactStore(tmp_path / "cache", max_bytes=100).fetch(str(src))
    cached = tmp_path / "cache" / "sha256" / digest
    os.chmod(cached, 0o644)
    cached.write_bytes(b"rot!")  # same size, different content

    store = ArtifactStore(tmp_path / "cache", max_bytes=100)
    path = await store.fetch(str(src), sha256=digest)
    assert path.read_bytes() == b"good"


async def test_concurrent_fetches_of_one_digest_copy_once(
    tmp_path: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "m"
    digest = write(src, b"weights")
    copies = 0
    original = ArtifactStore._copy_local

    async def counting(self: ArtifactStore, source: Path, tmp: Path) -> str:
        nonlocal copies
        copies += 1
        return await original(self, source, tmp)

    monkeypatch.setattr(ArtifactStore, "_copy_local", counting)
    paths = await asyncio.gather(*(store.fetch(str(src), sha256=digest) for _ in range(5)))
    assert set(paths) == {tmp_path / "cache" / "sha256" / digest}
    assert copies == 1


async def test_the_cache_is_private_and_each_artifact_is_seen_alone(
    tmp_path: Path, store: ArtifactStore
) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    write(a, b"first")
    write(b, b"second")
    path_a, path_b = await store.fetch(str(a)), await store.fetch(str(b))
    for folder in (tmp_path / "cache", path_a.parent):
        assert folder.stat().st_mode & 0o777 == 0o700
    assert path_a.stat().st_mode & 0o777 == 0o400
    view = store.view(path_a)
    assert view.read_bytes() == b"first" and view.name == path_a.name
    assert sorted(p.name for p in view.parent.iterdir()) == [path_a.name]  # nothing else there
    assert path_b.name not in {p.name for p in view.parent.iterdir()}
    with pytest.raises(ValueError, match="64 hex"):  # a file outside the cache has no view
        store.view(a)
