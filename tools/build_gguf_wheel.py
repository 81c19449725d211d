"""Build llama-cpp-python (the agent's `gguf` extra) once, portably, and cache the wheel.

    python3 tools/build_gguf_wheel.py            # prints the cached wheel's path
    python3 tools/build_gguf_wheel.py --arch-flags "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"

PyPI has llama-cpp-python only as an sdist, which compiles llama.cpp (minutes on two cores) and,
by default, with -march=native: a wheel built on one machine may then crash with SIGILL on
another. This builds the exact sdist uv.lock pins (downloaded and checked against the lock's
sha256) with `-DGGML_NATIVE=OFF` (x86-64: the AVX2/FMA/F16C baseline ggml then selects; arm64:
plain armv8-a unless --arch-flags raises it) and without the multimodal library the agent does
not use, into `.cache/wheels/` (or $HATSWARM_WHEEL_DIR). A wheel already there for this
version, Python and machine is printed without any build: CI can keep the directory between
runs. Stdlib only; `python3 -m uv` builds (isolated, with the sdist's own build requirements).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HATSWARM_WHEEL_DIR", ROOT / ".cache" / "wheels"))
PACKAGE = "llama-cpp-python"
PORTABLE = "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"


def locked_sdist(lock: Path) -> tuple[str, str, str]:
    """(version, url, sha256) of the package's sdist as uv.lock pins it."""
    doc = tomllib.loads(lock.read_text(encoding="utf-8"))
    for package in doc.get("package", []):
        if package.get("name") == PACKAGE:
            sdist = package.get("sdist") or {}
            digest = str(sdist.get("hash", "")).removeprefix("sha256:")
            if not sdist.get("url") or not digest:
                sys.exit(f"{lock}: {PACKAGE} {package.get('version')} has no sdist url and hash")
            return str(package["version"]), str(sdist["url"]), digest
    sys.exit(f"{lock} does not lock {PACKAGE}: add the agent's `gguf` extra and run `uv lock`")


def cached_wheel(version: str, python: str) -> Path | None:
    """The cached wheel of `version` for `python`'s version and this machine, if any."""
    tag = subprocess.run(
        [python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    machine = platform.machine()
    for wheel in sorted(CACHE.glob(f"llama_cpp_python-{version}-*.whl")):
        if (f"-{tag}-" in wheel.name or "-py3-" in wheel.name) and machine in wheel.name:
            return wheel
    return None


def download(url: str, sha256: str, target: Path) -> None:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=300) as response, target.open("wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        target.unlink()
        sys.exit(f"{url}: sha256 {digest.hexdigest()} does not match uv.lock's {sha256}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "uv.lock")
    parser.add_argument(
        "--arch-flags", default="", help="extra CMake flags, e.g. -DGGML_CPU_ARM_ARCH=..."
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter the wheel is for (its version)"
    )
    args = parser.parse_args()
    version, url, sha256 = locked_sdist(args.lock)
    wheel = cached_wheel(version, args.python)
    if wheel is not None:
        print(wheel)
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gguf-wheel-") as tmp:
        sdist = Path(tmp) / url.rsplit("/", 1)[-1]
        download(url, sha256, sdist)
        env = {
            **os.environ,
            "CMAKE_ARGS": f"{PORTABLE} {args.arch_flags}".strip(),
            "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get(
                "CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1)
            ),
        }
        out = Path(tmp) / "out"
        command = [sys.executable, "-m", "uv", "build", "--wheel", "--python", args.python]
        # (sys.executable: the python3 that has uv, as the Makefile's `python3 -m uv`)
        subprocess.run([*command, "--out-dir", str(out), str(sdist)], env=env, check=True)
        built = sorted(out.glob("*.whl"))
        if len(built) != 1:
            sys.exit(f"expected one wheel from the build, got {[w.name for w in built]}")
        target = CACHE / built[0].name
        shutil.move(built[0], target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
