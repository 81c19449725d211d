"""A slow artifact server (one byte every half second: never silent long enough for a read
timeout) no longer holds a model's lock: the download stalls out on its idle rule, and a
corrected LoadModel or an UnloadModel of the name goes through at once, cancelling it.

Before: the download could take the whole 1,800 s transfer timeout, with the model's lock held
across it, so the fix and the unload both waited behind it.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from hatswarm_agent.protocol.v1 import control_pb2

from tests.chaos.scenarios import Agents, TrickleServer, control, load_in_background
from tests.onnxmodels import build_identity

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SHA = "0" * 64  # never reached: the download does not finish


def _slow(url: str) -> control_pb2.LoadModelRequest:
    return control_pb2.LoadModelRequest(name="m", version="1", uri=url, sha256=SHA)


def test_a_trickling_download_stalls_out_on_the_idle_rule(tmp_path: Path) -> None:
    with TrickleServer() as server, Agents() as agents:
        agent = agents.start(
            ["--node-name", "n", "--state-dir", str(tmp_path / "state"),
             "--download-idle-seconds", "2", "--download-idle-min-bytes", "1024",
             "--allow-file-root", str(tmp_path)]
        )  # fmt: skip
        thread, result = load_in_background(agent.address, _slow(server.url))
        thread.join(60)
        assert result.get("state") == "MODEL_STATE_FAILED", result
        assert "stalled: fewer than 1024 bytes in 2s" in result["reason"]
        assert result["seconds"] < 20  # 2 s idle rule; generous for a loaded box


def test_a_corrected_load_and_an_unload_do_not_wait_for_a_slow_download(
    tmp_path: Path,
) -> None:
    good = build_identity(tmp_path / "ident.onnx")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    with TrickleServer() as server, Agents() as agents:
        agent = agents.start(
            ["--node-name", "n", "--state-dir", str(tmp_path / "state"),
             "--allow-file-root", str(tmp_path)]
        )  # fmt: skip
        stub = control(agent.address)
        slow, first = load_in_background(agent.address, _slow(server.url))
        time.sleep(1.0)  # the download is under way
        start = time.monotonic()
        fixed = stub.LoadModel(
            control_pb2.LoadModelRequest(name="m", version="1", uri=str(good), sha256=digest),
            timeout=60,
        )
        assert fixed.state == control_pb2.MODEL_STATE_READY, fixed.reason
        assert time.monotonic() - start < 10  # no 30 s idle rule, no 1,800 s transfer
        slow.join(30)
        assert first.get("code") == "ABORTED" and "newer LoadModel" in first["detail"], first

        version_2 = control_pb2.LoadModelRequest(name="m", version="2", uri=server.url, sha256=SHA)
        again, second = load_in_background(agent.address, version_2)
        time.sleep(1.0)
        start = time.monotonic()
        stub.UnloadModel(control_pb2.UnloadModelRequest(name="m"), timeout=60)
        assert time.monotonic() - start < 10
        again.join(30)
        assert second.get("code") == "ABORTED", second
        assert not stub.NodeStatus(control_pb2.NodeStatusRequest(), timeout=10).models
        deadline = time.monotonic() + 10
        while server.disconnects < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.disconnects >= 2  # both downloads were dropped, not left running
