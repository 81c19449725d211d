"""Build llama-cpp-python (the agent's `gguf` extra) once, portably, and cache the wheel.

    python3 tools/build_gguf_wheel.py            # prints the cached wheel's path
    python3 tools/build_gguf_wheel.py --arch-flags "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"
    python3 tools/build_gguf_wheel.py --arch aarch64   # cross-built for the arm64 agent image

PyPI has llama-cpp-python only as an sdist, which compiles llama.cpp (minutes on two cores) and,
by default, with -march=native: a wheel built on one machine may then crash with SIGILL on
another. This builds the exact sdist uv.lock pins (downloaded and checked against the lock's
sha256) with `-DGGML_NATIVE=OFF` (x86-64: the AVX2/FMA/F16C baseline ggml then selects; arm64:
plain armv8-a unless --arch-flags raises it), without OpenMP (ggml's own thread pool instead:
the wheel then needs no libgomp, which neither image base has) and without the multimodal
library the agent does not use, into `.cache/wheels/` (or $HATSWARM_WHEEL_DIR), with build tag
BUILD in its name (bumped with the flags, so an older cached build is not reused). A wheel already there for this
version, Python and machine is printed without any build: CI can keep the directory between
runs. Stdlib only; `python3 -m uv` builds (isolated, with the sdist's own build requirements).

`--arch aarch64` on an x86-64 machine cross-compiles (Debian's g++-aarch64-linux-gnu, a CMake
toolchain file; no emulation): the package is ctypes over libllama/libggml, so nothing in it is
compiled against the build host's Python. The CPU code targets a Raspberry Pi 5's Cortex-A76
(AARCH64_ARCH: armv8.2-a + dotprod + fp16, which qemu-user's default `max` CPU also has). The
build labels the wheel for the build host; it is relabelled `linux_aarch64` (linked against Debian
bookworm's glibc 2.36, what the agent image runs) after every shared library was checked to be an
aarch64 ELF.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HATSWARM_WHEEL_DIR", ROOT / ".cache" / "wheels"))
PACKAGE = "llama-cpp-python"
PORTABLE = "-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF"
BUILD = "1"  # the wheel's build tag: bump it when PORTABLE or AARCH64_ARCH change
AARCH64_ARCH = "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"
CROSS_PREFIX = "aarch64-linux-gnu-"
# Not manylinux: the libraries are linked against Debian bookworm's glibc 2.36 (the cross
# toolchain's) and were not audited against a manylinux policy; images/install.py accepts it.
AARCH64_TAG = "linux_aarch64"
TOOLCHAIN = """\
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER {prefix}gcc)
set(CMAKE_CXX_COMPILER {prefix}g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
"""
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}  # e_machine: EM_X86_64, EM_AARCH64


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


def cached_wheel(version: str, python: str, machine: str) -> Path | None:
    """The cached wheel of `version` for `python`'s version and `machine`, if any."""
    tag = subprocess.run(
        [python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    for wheel in sorted(CACHE.glob(f"llama_cpp_python-{version}-{BUILD}-*.whl")):
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


def elf_machines(wheel: Path) -> dict[str, int]:
    """e_machine of every ELF file in the wheel, by archive name."""
    found = {}
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                head = member.read(20)
            if head[:4] == b"\x7fELF":
                found[info.filename] = int.from_bytes(head[18:20], "little")
    return found


def relabel(wheel: Path, machine: str, tag: str) -> Path:
    """The wheel as `name-version-BUILD-py3-none-tag.whl` (WHEEL's Build and Tag, RECORD rehashed).

    Only after checking that every shared library in it is an ELF for `machine`: the label then
    says what the wheel is, not where it was built."""
    machines = elf_machines(wheel)
    wrong = {name: m for name, m in machines.items() if m != ELF_MACHINE[machine]}
    if not machines or wrong:
        sys.exit(f"{wheel.name}: not all {machine} ELF files ({len(machines)} ELF, wrong: {wrong})")
    name, version = wheel.name.split("-")[:2]
    target = wheel.with_name(f"{name}-{version}-{BUILD}-py3-none-{tag}.whl")
    dist_info = f"{name}-{version}.dist-info"
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
        records = []
        for info in src.infolist():
            if info.filename == f"{dist_info}/RECORD":
                continue
            data = src.read(info)
            if info.filename == f"{dist_info}/WHEEL":
                keep = [ln for ln in data.decode().splitlines() if ln.strip()]  # headers only
                lines = [ln for ln in keep if not ln.startswith(("Tag:", "Build:"))]
                data = (
                    "\n".join([*lines, f"Build: {BUILD}", f"Tag: py3-none-{tag}"]) + "\n"
                ).encode()
            out.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{info.filename},sha256={digest.decode()},{len(data)}")
        records.append(f"{dist_info}/RECORD,,")
        out.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    wheel.unlink()
    partial.replace(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "uv.lock")
    parser.add_argument(
        "--arch-flags", default="", help="extra CMake flags, e.g. -DGGML_CPU_ARM_ARCH=..."
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter the wheel is for (its version)"
    )
    parser.add_argument(
        "--arch",
        choices=sorted(ELF_MACHINE),
        default=platform.machine(),
        help="the wheel's machine: aarch64 on x86-64 cross-compiles (g++-aarch64-linux-gnu)",
    )
    args = parser.parse_args()
    cross = args.arch != platform.machine()
    if cross and (args.arch, platform.machine()) != ("aarch64", "x86_64"):
        sys.exit(f"--arch {args.arch}: only aarch64 is cross-built, and only on x86_64")
    if cross and shutil.which(f"{CROSS_PREFIX}g++") is None:
        sys.exit(f"--arch aarch64 needs {CROSS_PREFIX}g++: apt-get install g++-aarch64-linux-gnu")
    version, url, sha256 = locked_sdist(args.lock)
    wheel = cached_wheel(version, args.python, args.arch)
    if wheel is not None:
        print(wheel)
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gguf-wheel-") as tmp:
        sdist = Path(tmp) / url.rsplit("/", 1)[-1]
        download(url, sha256, sdist)
        cmake_args = f"{PORTABLE} {args.arch_flags}".strip()
        if cross:
            toolchain = Path(tmp) / "aarch64.cmake"
            toolchain.write_text(TOOLCHAIN.format(prefix=CROSS_PREFIX))
            cmake_args += f" -DCMAKE_TOOLCHAIN_FILE={toolchain} {AARCH64_ARCH}"
        env = {
            **os.environ,
            "CMAKE_ARGS": cmake_args,
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
        tag = AARCH64_TAG if cross else built[0].name.removesuffix(".whl").split("-")[-1]
        built[0] = relabel(built[0], args.arch, tag)
        target = CACHE / built[0].name
        shutil.move(built[0], target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
