"""`hatswarm up`'s agent start survives the race it cannot avoid: a port picked free is taken
by another process before the agent binds it (CI saw `--metrics-port N: already in use`)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hatswarm_operator.local import processes
from hatswarm_operator.local.processes import NodeSpec, PortTakenError, start_agent

pytestmark = pytest.mark.integration


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_port_taken_meanwhile_is_retried_with_fresh_ones(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = processes.free_port
    handed = iter([taken_port])
    monkeypatch.setattr(processes, "free_port", lambda: next(handed, None) or real())
    agent = start_agent(NodeSpec("pi-01", "hailo8l"), tmp_path)
    try:
        assert agent.alive()
        assert agent.metrics_port not in (0, taken_port)
    finally:
        agent.stop()


def test_a_port_always_taken_fails_naming_it(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processes, "free_port", lambda: taken_port)
    with pytest.raises(PortTakenError, match=f"--metrics-port {taken_port}: already in use"):
        start_agent(NodeSpec("pi-01", "hailo8l"), tmp_path)


def test_other_start_failures_are_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = processes.free_port
    monkeypatch.setattr(processes, "free_port", lambda: calls.append(1) or real())
    with pytest.raises(RuntimeError, match="did not start") as info:
        start_agent(NodeSpec("pi-01", "hailo8l"), tmp_path, extra_args=["--no-such-flag"])
    assert not isinstance(info.value, PortTakenError)
    assert len(calls) == 2  # one attempt: metrics and http ports once
