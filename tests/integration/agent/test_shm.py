"""Triton's system shared memory and the unix socket against real agents, with the unmodified
`tritonclient.utils.shared_memory` in a child process (tests/tritonshm.py).

What must hold: answers through shared memory equal onnxruntime's, over the unix socket and
over loopback TCP; the answer carries no output bytes (they went into the region); a region
registered under one bearer token is unknown under another; a caller that is not on this host
cannot register; a gateway that does not hold the model still answers into the region (its
peer gets the inputs in the request).
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import tritonjobs, tritonshm
from tests.agentproc import AgentProcess, start_agent
from tests.onnxmodels import direct_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AgentProcess, str]]:
    sock = tmp_path_factory.mktemp("uds") / "agent.sock"
    proc = start_agent(["--model", f"mlp={model_dir / 'mlp.onnx'}", "--uds", str(sock)])
    yield proc, f"unix:{sock}"
    proc.stop()
    assert not sock.exists()  # removed on a clean stop


def test_shared_memory_over_the_unix_socket_and_tcp(
    local: tuple[AgentProcess, str], model_dir: Path
) -> None:
    agent, uds = local
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    for url in (uds, agent.address):
        got = tritonjobs.run(tritonshm.infer_mlp, url, x)
        assert len(got["status"]) == 2
        for i, y in enumerate(got["outputs"]):
            np.testing.assert_allclose(y, direct_run(model_dir / "mlp.onnx", x + i), rtol=1e-5)
        assert got["raw_lengths"] == [[0]] * 3  # the output travelled in memory, not the reply
        assert got["after_unregister"] == []


def test_plain_requests_over_the_unix_socket(local: tuple[AgentProcess, str]) -> None:
    _, uds = local
    out = tritonjobs.run(tritonjobs.infer_many, uds, "mlp", "x", [1, 64], 5, "y")
    assert out["ok"] == 5, out["errors"]


def test_a_region_is_unknown_under_another_token(model_dir: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token")
    with start_agent(
        ["--model", f"mlp={model_dir / 'mlp.onnx'}", "--auth-token-file", str(token)]
    ) as agent:
        key = f"/hatswarm-test-{agent.proc.pid}"
        out = tritonjobs.run(
            tritonshm.register_then_use, agent.address, key, 256, "first-token",
            "second-token", f"{token}=second-token",
        )  # fmt: skip
    assert out.get("registered") == "ok", out
    assert out["status_other"] == ""  # the rotated token sees none of the first one's regions
    assert out["infer_other"].startswith("StatusCode.NOT_FOUND"), out
    assert "'region' is not registered" in out["infer_other"]


def _external_address() -> str | None:
    """An address of this host that is not loopback (callers from it are not local)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outgoing interface
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_callers_that_are_not_on_this_host_cannot_register(model_dir: Path) -> None:
    address = _external_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    with start_agent(["--model", f"mlp={model_dir / 'mlp.onnx'}"], host=address) as agent:
        out = tritonjobs.run(tritonshm.try_register, agent.address, "/hatswarm-test-remote", 64)
    assert out.startswith("StatusCode.PERMISSION_DENIED"), out
    assert "clients on this host" in out


def test_a_gateway_routes_a_shared_memory_request_to_the_holder(
    local: tuple[AgentProcess, str], model_dir: Path, tmp_path: Path
) -> None:
    holder, _ = local
    sock = tmp_path / "gw.sock"
    with start_agent(["--gateway", "--peer", f"mlp={holder.address}", "--uds", str(sock)]):
        x = np.ones((1, 64), np.float32)
        got = tritonjobs.run(tritonshm.infer_mlp, f"unix:{sock}", x, "", 1)
    np.testing.assert_allclose(got["outputs"][0], direct_run(model_dir / "mlp.onnx", x), rtol=1e-5)
    assert got["raw_lengths"] == [[0]]


def test_the_unix_socket_keeps_the_auth_boundary(model_dir: Path, tmp_path: Path) -> None:
    """A unix socket is no way around the inference token: without it nothing registers, with
    it shared memory works as over TCP."""
    token = tmp_path / "token"
    token.write_text("the-token")
    sock = tmp_path / "auth.sock"
    args = ["--model", f"mlp={model_dir / 'mlp.onnx'}", "--auth-token-file", str(token)]
    with start_agent([*args, "--uds", str(sock)]):
        refused = tritonjobs.run(tritonshm.try_register, f"unix:{sock}", "/hatswarm-test-anon", 64)
        x = np.ones((1, 64), np.float32)
        got = tritonjobs.run(tritonshm.infer_mlp, f"unix:{sock}", x, "the-token", 1)
    assert refused.startswith("StatusCode.UNAUTHENTICATED"), refused
    np.testing.assert_allclose(got["outputs"][0], direct_run(model_dir / "mlp.onnx", x), rtol=1e-5)


def test_the_unix_socket_is_for_owner_and_group_only(local: tuple[AgentProcess, str]) -> None:
    """Connecting to a unix socket needs write permission on its file: 0660 by default, as
    containerd and docker make theirs, whatever the umask (this agent's is the test's)."""
    _, uds = local
    sock = Path(uds.removeprefix("unix:"))
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660


@pytest.mark.parametrize(("flag", "mode"), [([], 0o660), (["--unix-socket-mode", "0600"], 0o600)])
def test_the_unix_socket_mode_holds_under_an_open_umask(
    model_dir: Path, tmp_path: Path, flag: list[str], mode: int
) -> None:
    """Under umask 0 a socket would be 0777 (any local user connects): the agent's is not, and
    `--unix-socket-mode` narrows it further; requests still work through it."""
    sock = tmp_path / "open.sock"
    old = os.umask(0)
    try:
        agent = start_agent(["--model", f"mlp={model_dir / 'mlp.onnx'}", "--uds", str(sock), *flag])
    finally:
        os.umask(old)
    with agent:
        assert stat.S_IMODE(sock.stat().st_mode) == mode
        out = tritonjobs.run(tritonjobs.infer_many, f"unix:{sock}", "mlp", "x", [1, 64], 2, "y")
        assert out["ok"] == 2, out["errors"]
