"""Fixtures for the image checks (`make images-check`): the built images, tools, timing figures.

The tests here run the images that images/build.sh built: the arm64 ones under qemu-user on
their own root filesystem (`qemu-aarch64-static -L ROOTFS`), the amd64 ones under podman. They
are marked `images` and `make test` deselects them. A missing tool or image skips with the
reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = re.search(
    r'^version = "(.+)"$', (ROOT / "node-agent" / "pyproject.toml").read_text(), re.M
).group(1)  # type: ignore[union-attr]
REGISTRY = os.environ.get("REGISTRY", "ghcr.io/hatswarm")
BUILDAH = ["buildah", "--storage-driver", "vfs"]
PODMAN = ["podman", "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
# podman's default RLIMIT_NOFILE/RLIMIT_NPROC exceed what this sandbox lets runc set (NPROC above
# kernel.pid_max, 32768 here, fails with "error setting rlimit type 6: operation not permitted").
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
QEMU = "qemu-aarch64-static"
REPORT = ROOT / "build" / "images-check.json"

# Figures the tests measure (wall times, sizes), printed at the end and written to REPORT.
FIGURES: dict[str, Any] = {}


def image(role: str, arch: str) -> str:
    return f"{REGISTRY}/{role}:{VERSION}-{arch}"


def missing(reason: str) -> None:
    """Skip, or fail under CI: a check that cannot run there must not pass silently."""
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(reason)
    pytest.skip(reason)


def need(*tools: str) -> None:
    for name in tools:
        if shutil.which(name) is None:
            missing(
                f"{name} is not installed (apt-get install buildah podman runc qemu-user-static)"
            )


def run(*cmd: str, timeout: float = 300, check: bool = True, **kw: Any) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return str(proc.stdout)


def inspect(ref: str) -> dict[str, Any]:
    """buildah's view of a local image; skips when it was not built."""
    need("buildah")
    proc = subprocess.run(
        [*BUILDAH, "inspect", "--type", "image", ref], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        missing(f"{ref} is not built: run images/build.sh (make images-check builds it)")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@contextlib.contextmanager
def mounted(ref: str) -> Iterator[Path]:
    """The root filesystem of a throwaway container of `ref` (the image itself is untouched)."""
    inspect(ref)
    ctr = run(*BUILDAH, "from", "--pull=never", ref).strip().splitlines()[-1]
    try:
        yield Path(run(*BUILDAH, "mount", ctr).strip())
    finally:
        run(*BUILDAH, "umount", ctr, check=False)
        run(*BUILDAH, "rm", ctr, check=False)


@functools.cache
def pip_python() -> str:
    """A python3 with pip for images/install.py (uv's venvs, this one included, have no pip)."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    candidates = [os.environ.get("PYTHON", ""), *(str(Path(d) / "python3") for d in dirs)]
    for py in [*candidates, "/usr/bin/python3"]:
        if (
            py
            and os.access(py, os.X_OK)  # PATH may name directories that have no python3
            and subprocess.run([py, "-m", "pip", "--version"], capture_output=True).returncode == 0
        ):
            return py
    missing("no python3 with pip on PATH (set PYTHON=...)")
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("image figures (also in build/images-check.json)")
    for key, value in FIGURES.items():
        terminalreporter.write_line(f"{key}: {value}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(FIGURES, indent=2) + "\n")
