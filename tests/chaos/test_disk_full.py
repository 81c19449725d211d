"""A full disk under the agent's state: the load fails blaming the cache's disk (not the
model's source), and an unload whose assignment cannot be saved does not come back after a
restart.

The disk: a 512 KiB tmpfs mounted over the state directory when this runs as root with mount
allowed (real ENOSPC); otherwise the agent process's RLIMIT_FSIZE, set with prlimit after it
started (writes past it fail with EFBIG, "File too large", through the same code paths).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hatswarm_agent.protocol.v1 import control_pb2

from tests.agentproc import AgentProcess
from tests.chaos.scenarios import Agents, control
from tests.onnxmodels import build_identity, build_mlp

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

DISK_KIB = 512


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[str]:
    """`path` on a 512 KiB tmpfs ("tmpfs"), or as it is ("rlimit": the caller limits files)."""
    path.mkdir(parents=True)
    forced = os.environ.get("HATSWARM_CHAOS_DISK", "")  # "rlimit": try the fallback here
    if forced != "rlimit" and os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_KIB}k", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )
        if mounted.returncode == 0:
            try:
                yield "tmpfs"
            finally:
                subprocess.run(["umount", "-l", str(path)], check=False)
            return
    yield "rlimit"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fill(kind: str, disk: Path, agent: AgentProcess, leave: int = 0) -> None:
    """No more room: a filler file up to ENOSPC (tmpfs), or a file size limit (rlimit)."""
    if kind == "rlimit":
        resource.prlimit(
            agent.proc.pid, resource.RLIMIT_FSIZE, (leave or 16, resource.RLIM_INFINITY)
        )
        return
    with contextlib.suppress(OSError), (disk / "filler").open("wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


def test_a_full_disk_during_a_local_copy_blames_the_cache(tmp_path: Path) -> None:
    model = build_mlp(tmp_path / "big.onnx", hidden=4096)  # about 1 MiB: more than the disk
    assert model.stat().st_size > DISK_KIB * 1024
    with small_disk(tmp_path / "state") as kind, Agents() as agents:
        agent = agents.start(
            ["--node-name", "n", "--state-dir", str(tmp_path / "state"),
             "--allow-file-root", str(tmp_path)]
        )  # fmt: skip
        if kind == "rlimit":
            fill(kind, tmp_path / "state", agent, leave=DISK_KIB * 1024)
        status = control(agent.address).LoadModel(
            control_pb2.LoadModelRequest(name="big", uri=str(model), sha256=digest(model)),
            timeout=60,
        )
        assert status.state == control_pb2.MODEL_STATE_FAILED
        assert "into the artifact cache" in status.reason, status.reason
        assert ("No space left" if kind == "tmpfs" else "File too large") in status.reason
        assert "cannot read" not in status.reason


def test_an_unload_that_cannot_be_saved_is_not_undone_by_a_restart(tmp_path: Path) -> None:
    model = build_identity(tmp_path / "ident.onnx")
    state = tmp_path / "state"
    args = ["--node-name", "n", "--state-dir", str(state), "--allow-file-root", str(tmp_path)]
    with small_disk(state) as kind, Agents() as agents:
        agent = agents.start(args)
        stub = control(agent.address)
        loaded = stub.LoadModel(
            control_pb2.LoadModelRequest(name="m", uri=str(model), sha256=digest(model)), timeout=60
        )
        assert loaded.state == control_pb2.MODEL_STATE_READY, loaded.reason
        assert (state / "assignment.json").exists()
        fill(kind, state, agent)
        stub.UnloadModel(control_pb2.UnloadModelRequest(name="m"), timeout=60)
        if kind == "tmpfs":  # (a file size limit also cuts the agent's own log short)
            assert "could not save the assignment" in agent.stderr()
        assert not (state / "assignment.json").exists()  # the stale one went
        agent.stop()
        restarted = agents.start(args)  # the disk is still full
        status = control(restarted.address).NodeStatus(control_pb2.NodeStatusRequest(), timeout=10)
        assert [m.name for m in status.models] == []  # not resurrected
