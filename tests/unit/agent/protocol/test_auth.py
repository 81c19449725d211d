"""Tokens from a file, bearer metadata, and the one channel builder."""

from __future__ import annotations

from pathlib import Path

import grpc
from hatswarm_agent.protocol.auth import TokenFile, bearer, bearer_metadata, check, open_channel


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    tokens = TokenFile(path)
    assert tokens.token() == "" and tokens.metadata() == ()
    path.write_text("one\n")
    assert tokens.token() == "one"
    path.write_text("second\n")
    assert tokens.token() == "second"
    assert bearer([("authorization", "Bearer second")]) == "second"
    assert bearer([("x", "y")]) == ""
    assert check("second", "second") and not check("second", "one") and not check("", "")


def test_bearer_metadata_is_what_the_server_reads() -> None:
    assert bearer_metadata("") == ()
    md = bearer_metadata("s3cret")
    assert md == (("authorization", "Bearer s3cret"),)
    assert bearer(md) == "s3cret"


async def test_open_channel_plaintext_and_tls() -> None:
    plain = open_channel("127.0.0.1:1", options=[("grpc.enable_retries", 0)])
    secure = open_channel("127.0.0.1:1", grpc.ssl_channel_credentials(), server_name="agent")
    assert isinstance(plain, grpc.aio.Channel) and isinstance(secure, grpc.aio.Channel)
    await plain.close()
    await secure.close()
