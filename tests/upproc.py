"""`hatswarm up` as a subprocess, for the local-pool tests: started with its output collected
on a thread, its status file and the lines it prints read while it runs, stopped with SIGINT
(the way a person stops it) and checked to exit 0, its agents gone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from tests.polling import poll

HATSWARM = Path(sys.executable).parent / "hatswarm"


class Up:
    """`hatswarm up ARGS --quiet --state-dir STATE`; a context manager that stops it on exit."""

    def __init__(self, state: Path, *args: str) -> None:
        self.state = state
        self.proc = subprocess.Popen(
            [str(HATSWARM), "up", *args, "--quiet", "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(
            target=lambda: self.lines.extend(iter(stdout.readline, "")), daemon=True
        ).start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def line(self, text: str, within: float = 90.0) -> str:
        """The first line printed that contains `text` (waiting for it)."""
        assert poll(lambda: any(text in x for x in self.lines), within=within), self.output
        return next(x for x in self.lines if text in x)

    def token(self) -> str:
        """The clients' bearer token `up` generated (the file it names is owner-only)."""
        path = Path(self.line("token in").rsplit(" ", 1)[1].strip())
        assert path.stat().st_mode & 0o777 == 0o600
        return path.read_text().strip()

    def status(self) -> dict[str, Any]:
        """The pool's status.json as last written ({} before the first write)."""
        try:
            out: dict[str, Any] = json.loads((self.state / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return out

    def model(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.status().get("models", {}).get(name, {})
        return out

    def children(self) -> list[int]:
        return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]

    def stop(self, timeout: float = 60) -> None:
        """SIGINT; `up` must exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=timeout) == 0, self.output

    def __enter__(self) -> Up:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def alive(pids: list[int]) -> list[int]:
    """The processes of `pids` still running (zombies and vanished ones are not)."""
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out
