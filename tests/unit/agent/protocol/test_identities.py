"""AgentAuth: who may do what, decided without sockets (the interceptor only applies it)."""

from __future__ import annotations

from pathlib import Path

import grpc
from hatswarm_agent.protocol.auth import (
    PEER_KEY,
    PEER_ROTATION_GRACE_S,
    AgentAuth,
    TokenFile,
    is_loopback_peer,
    peer_credential,
)


def files(tmp_path: Path, control: str | None, *inference: str) -> AgentAuth:
    c = None
    if control is not None:
        (tmp_path / "control").write_text(control + "\n")
        c = TokenFile(tmp_path / "control")
    tokens = []
    for i, text in enumerate(inference):
        (tmp_path / f"clients-{i}").write_text(text)
        tokens.append(TokenFile(tmp_path / f"clients-{i}"))
    return AgentAuth(control=c, inference=tuple(tokens))


def md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_only_the_control_token_opens_control(tmp_path: Path) -> None:
    auth = files(tmp_path, "ctl", "kiosk-a\n# a comment\nkiosk-b\n")
    assert auth.control_denial(md("ctl")) is None
    for presented, code in (
        ([], grpc.StatusCode.UNAUTHENTICATED),
        (md("wrong"), grpc.StatusCode.UNAUTHENTICATED),
        (md("kiosk-a"), grpc.StatusCode.PERMISSION_DENIED),  # an inference token, named as such
        (md("kiosk-b"), grpc.StatusCode.PERMISSION_DENIED),
        ([(PEER_KEY, peer_credential("ctl"))], grpc.StatusCode.UNAUTHENTICATED),  # a hop's
    ):
        denial = auth.control_denial(presented, "ipv4:127.0.0.1:5000")
        assert denial is not None and denial.code == code, presented


def test_inference_takes_any_client_token_the_control_token_or_a_peer_credential(
    tmp_path: Path,
) -> None:
    auth = files(tmp_path, "ctl", "kiosk-a\nkiosk-b\n", "tenant-c")
    for ok in (md("kiosk-a"), md("kiosk-b"), md("tenant-c"), md("ctl")):
        assert auth.inference_denial(ok) is None
    assert auth.inference_denial([(PEER_KEY, peer_credential("ctl"))]) is None
    assert auth.inference_denial([(PEER_KEY, peer_credential("other"))]) is not None
    assert auth.inference_denial([("x-hatswarm-hop", "1")]) is not None  # a marker proves nothing
    denial = auth.inference_denial([])
    assert denial is not None and "missing bearer token" in denial.message
    # Inference without tokens is open (the pool's explicit choice); control still is not.
    (tmp_path / "open").mkdir()
    opened = files(tmp_path / "open", "ctl")
    assert opened.inference_denial([]) is None
    assert opened.control_denial([], "ipv4:127.0.0.1:1") is not None


def test_without_a_control_token_control_answers_this_host_only(tmp_path: Path) -> None:
    auth = files(tmp_path, None)
    assert auth.control_denial([], "ipv4:127.0.0.1:5000") is None
    assert auth.control_denial([], "ipv6:[::1]:5000") is None
    assert auth.control_denial([], "ipv6:[::ffff:127.0.0.1]:5000") is None
    for stranger in ("ipv4:10.0.0.7:5000", "ipv6:[fe80::1]:5000", "", "bogus"):
        denial = auth.control_denial([], stranger)
        assert denial is not None and "this host only" in denial.message
    assert auth.peer_metadata() == ()  # nothing to derive a hop credential from
    assert is_loopback_peer("unix:/run/agent.sock")


def test_hops_carry_the_peer_credential_and_survive_a_rotation(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "control"
    path.write_text("first\n")
    sender = AgentAuth(control=TokenFile(path, clock=lambda: now[0]))
    other = tmp_path / "other"
    other.write_text("first\n")
    receiver = AgentAuth(control=TokenFile(other, clock=lambda: now[0]), inference=())
    assert sender.peer_metadata() == ((PEER_KEY, peer_credential("first")),)
    assert "first" not in str(sender.peer_metadata())  # never the token itself
    path.write_text("second-longer\n")  # the sender's kubelet refreshed first
    sent = [v for _, v in sender.peer_metadata()]
    assert sent == [peer_credential("second-longer"), peer_credential("first")]
    assert receiver.peer_admits(sent)
    other.write_text("second-longer\n")
    assert receiver.peer_admits([peer_credential("first")])  # within the grace period
    now[0] += PEER_ROTATION_GRACE_S + 1
    assert not receiver.peer_admits([peer_credential("first")])
    assert [v for _, v in sender.peer_metadata()] == [peer_credential("second-longer")]


def test_http_front_doors_ask_the_same_question_with_their_headers(tmp_path: Path) -> None:
    auth = files(tmp_path, "ctl", "kiosk\n")
    headers = {"Authorization": "Bearer kiosk", "Content-Type": "application/json"}
    assert auth.inference_denial(headers.items()) is None
    assert auth.inference_denial({"Authorization": "Bearer nope"}.items()) is not None
