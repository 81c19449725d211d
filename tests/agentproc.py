"""Start real `hatswarm-agent` processes on loopback (the models they serve: onnxmodels.py).

Shared by the integration tests (`from tests.agentproc import start_agent`) and by the
benchmarks, which put `tests/` on sys.path and import it as `agentproc`.

`start_agent([...])` returns once the agent printed its ready line (`start_agents` starts
several side by side); `AgentProcess.stop()` sends SIGTERM and waits (then kills), and is safe
to call twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from hatswarm_operator.local import processes

READY_PREFIX = "hatswarm-agent ready on "


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, outside the ephemeral range (see
    `hatswarm_operator.local.processes.free_port`: a probed port is not taken meanwhile by the
    many `--port 0` listeners and connections of a test run)."""
    return processes.free_port()


@dataclass
class AgentProcess:
    """A running agent: its address and how to stop it."""

    proc: subprocess.Popen[str]
    host: str
    port: int
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful), then SIGKILL after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_agent(
    args: Sequence[str],
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> AgentProcess:
    """Run `hatswarm-agent --host HOST --port PORT *args` and wait for its ready line.

    `port=0` lets the agent pick a free port (read back from the ready line). Raises
    RuntimeError with the agent's stderr when it exits or stays silent for `timeout` s.
    """
    agent = _spawn(args, port, host, env)
    _await_ready([agent], timeout)
    return agent


def start_agents(
    arg_lists: Sequence[Sequence[str]],
    *,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> list[AgentProcess]:
    """Several agents on free ports, started side by side: their start-up (mostly imports)
    overlaps, so three cost little more than one. All are ready on return, or none is left
    running and RuntimeError says which one failed."""
    agents: list[AgentProcess] = []
    try:
        for args in arg_lists:
            agents.append(_spawn(args, 0, "127.0.0.1", env))
    except BaseException:
        for agent in agents:
            agent.kill()
        raise
    _await_ready(agents, timeout)
    return agents


def _spawn(args: Sequence[str], port: int, host: str, env: dict[str, str] | None) -> AgentProcess:
    fd, name = tempfile.mkstemp(prefix="hatswarm-agent-", suffix=".stderr")
    os.close(fd)
    stderr_path = Path(name)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "hatswarm_agent.cli", "--host", host, "--port", str(port)]
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(
            [*cmd, *args], stdout=subprocess.PIPE, stderr=err, text=True, env=full_env
        )
    agent = AgentProcess(proc, host, port, stderr_path)
    assert proc.stdout is not None
    threading.Thread(target=_pump, args=(proc.stdout, agent), daemon=True).start()
    return agent


def _await_ready(agents: Sequence[AgentProcess], timeout: float) -> None:
    """Wait for every agent's ready line; on an exit or `timeout` s, kill them all and raise."""
    deadline = time.monotonic() + timeout
    for agent in agents:
        while not agent.ready.wait(0.05):
            if agent.proc.poll() is not None or time.monotonic() > deadline:
                for other in agents:
                    other.kill()
                raise RuntimeError(
                    f"agent did not become ready (exit {agent.proc.returncode}):\n{agent.stderr()}"
                )


def _pump(stream: IO[str], agent: AgentProcess) -> None:
    for line in stream:
        agent.stdout_lines.append(line)
        if line.startswith(READY_PREFIX):
            agent.port = int(line.rsplit(":", 1)[1])
            agent.ready.set()
