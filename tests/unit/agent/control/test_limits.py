"""Bounds on control calls: option ranges, FAILED entries, reasons; and the artifact sources."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from grpc_health.v1.health import aio as health_aio
from hatswarm_agent.control.artifacts import ArtifactStore
from hatswarm_agent.control.lifecycle import Backends, ModelLifecycle
from hatswarm_agent.control.limits import (
    FAILED_TTL_S,
    MAX_FAILED_ENTRIES,
    MAX_REASON_CHARS,
    check_load_request,
    short_reason,
)
from hatswarm_agent.control.signing import TrustedKeys, generate_keypair, sign_digest
from hatswarm_agent.control.sources import ArtifactSources, SourceRefusedError
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.serving.errors import InvalidInputError
from hatswarm_agent.serving.metrics import AgentMetrics
from hatswarm_agent.serving.registry import ModelRegistry

SHA = "a" * 64


def request(**kw: object) -> control_pb2.LoadModelRequest:
    fields: dict[str, object] = {"name": "m", "uri": "https://h.example/m.onnx", "sha256": SHA}
    fields.update(kw)
    return control_pb2.LoadModelRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"options": {"intra_op_threads": "200"}}, "intra_op_threads=200 is out of range: 0 to"),
        (
            {"options": {"queue_limit": str(2**62)}},
            "queue_limit=4611686018427387904 is out of range",
        ),
        ({"options": {"slowdown": "nan"}}, "slowdown=nan is out of range"),
        ({"options": {"graph_optimization": "max"}}, "expected one of disable, basic"),
        ({"options": {"filename": "../x"}}, "plain file name"),
        ({"options": {"warm_up": "maybe"}}, "not a boolean"),
        ({"options": {"spinning": "maybe"}}, "spinning='maybe' is not a boolean"),
        ({"options": {"sessions": "three"}}, "sessions='three': expected one of auto, one, two"),
        ({"options": {"arena": "pool"}}, "arena='pool': expected one of shared, session, off"),
        ({"options": {"uri": "file:///etc/passwd"}}, "set by the agent"),
        ({"options": {f"k{i}": "1" for i in range(65)}}, "65 options, over the limit of 64"),
        ({"name": "x" * 254}, "model name is 254 characters, over the limit of 253"),
        ({"name": "../m"}, "may hold only letters"),
        ({"uri": "https://h/" + "p" * 5000}, "uri is 5010 characters, over the limit of 4096"),
        ({"cache_ttl_seconds": -1}, "cache_ttl_seconds=-1 is out of range"),
    ],
)
def test_every_field_is_range_checked_naming_the_limit(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError) as err:
        check_load_request(request(**fields))
    assert message in str(err.value)


def test_options_in_range_pass() -> None:
    check_load_request(
        request(options={"intra_op_threads": "2", "queue_limit": "64", "slowdown": "1.5",
                         "hef": "model.hef", "warm_up": "false", "profile": "yolov8s"})
    )  # fmt: skip


def test_reasons_are_cut_short() -> None:
    assert short_reason("x" * 100) == "x" * 100
    cut = short_reason("y" * 10_000)
    assert len(cut) == MAX_REASON_CHARS and cut.endswith("(truncated)")


def test_sources_confine_files_and_require_a_digest(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "m.onnx").write_bytes(b"x")
    (root / "link").symlink_to(tmp_path)
    sources = ArtifactSources([root])
    assert sources.check(request(uri=(root / "m.onnx").as_uri())) == str(
        (root / "m.onnx").resolve()
    )
    for uri in (str(tmp_path / "other"), f"file://{root}/../other", str(root / "link" / "x"),
                "file://host/models/m.onnx", "ftp://h/m", "/etc/passwd"):  # fmt: skip
        with pytest.raises(SourceRefusedError):
            sources.check(request(uri=uri))
    with pytest.raises(SourceRefusedError, match="needs a sha256"):
        sources.check(request(sha256=""))
    with pytest.raises(SourceRefusedError, match="allowed file roots \\(none configured\\)"):
        ArtifactSources().check(request(uri=str(root / "m.onnx")))


def test_signatures_verify_only_under_trusted_keys(tmp_path: Path) -> None:
    private, public = generate_keypair()
    other_private, other_public = generate_keypair()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "publisher").write_text(public)
    (tmp_path / "keys" / "..data").mkdir()  # a kubelet's Secret volume internals: skipped
    sources = ArtifactSources(trusted=TrustedKeys([tmp_path / "keys"]), require_signatures=True)
    sources.verify_signature(request(signature=sign_digest(private, SHA)), SHA)
    sources.verify_signature(request(signature=sign_digest(private, SHA), public_key=public), SHA)
    for bad in (
        request(),  # unsigned, and signatures are required
        request(signature=sign_digest(other_private, SHA)),
        request(signature=sign_digest(other_private, SHA), public_key=other_public),
        request(signature=sign_digest(private, SHA), public_key=other_public),
    ):
        with pytest.raises(Exception, match=r"signature|signed") as err:
            sources.verify_signature(bad, SHA)
        assert type(err.value).__name__ == "SignatureError"
    with pytest.raises(Exception, match="trusts no signing keys"):
        ArtifactSources().verify_signature(request(signature=sign_digest(private, SHA)), SHA)


async def test_failed_entries_are_bounded_and_expire(tmp_path: Path) -> None:
    now = [0.0]
    lc = ModelLifecycle(
        ModelRegistry(),
        AgentMetrics(),
        ArtifactStore(tmp_path / "cache", 1 << 20),
        Backends("onnxruntime", "cpu"),
        health_aio.HealthServicer(),
        sources=ArtifactSources([tmp_path]),
        clock=lambda: now[0],
    )
    for i in range(MAX_FAILED_ENTRIES * 3):
        path = tmp_path / f"m{i}.onnx"
        path.write_bytes(b"not onnx %d" % i)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entry = await lc.load(
            control_pb2.LoadModelRequest(name=f"m{i}", uri=str(path), sha256=digest)
        )
        assert not entry.ready
        now[0] += 1
    names = lc.registry.names()
    assert len(names) == MAX_FAILED_ENTRIES == lc.failed_count()
    assert names[0] == f"m{MAX_FAILED_ENTRIES * 2}"  # the oldest went first
    assert len(lc._locks) <= MAX_FAILED_ENTRIES  # no per-name state beyond the entries kept
    now[0] += FAILED_TTL_S + 1
    assert lc.failed_count() == 0 and lc.registry.names() == [] and not lc._locks
    await lc.close()


@pytest.mark.parametrize("uri", ["file:///models/a\x00b.onnx", "/models/a\x00b.onnx"])
def test_a_nul_in_the_uri_is_refused_not_a_crash(tmp_path: Path, uri: str) -> None:
    """os.path raises ValueError on a NUL: it must come back as INVALID_ARGUMENT (hypothesis
    found it in the fuzz test)."""
    with pytest.raises(SourceRefusedError, match="NUL"):
        ArtifactSources([tmp_path]).check(request(uri=uri))


def test_an_unknown_backend_is_the_callers_mistake() -> None:
    with pytest.raises(InvalidInputError, match="unknown backend 'nope'"):
        check_load_request(request(backend="nope"))
    check_load_request(request(backend="onnxruntime"))
