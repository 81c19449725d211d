"""Local mode's infrastructure: agent processes on loopback standing in for Pi + HAT+ nodes.

This is the local adapter's half of "one control loop, two adapters": where the kopf operator
learns nodes from the Kubernetes API, `hatswarm up` starts them itself. Each agent runs in its
own session (so a terminal's Ctrl-C reaches only `hatswarm up`, which then stops them in
order) and dies with its parent on Linux (PR_SET_PDEATHSIG), so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml
from hatswarm_agent.protocol.defaults import ROUTE_RETRIES, ROUTE_TIMEOUT_MS

from hatswarm_operator.api.common import ACCELERATORS

READY_PREFIX = "hatswarm-agent ready on "
BUNDLED_MODEL = "light_shufflenet.onnx"


@dataclass(frozen=True)
class NodeSpec:
    """A simulated node: its name, Hailo chip and labels (as `kubectl get node --show-labels`).

    `memory_mib` stands for the Node's allocatable memory (a 4 GB Pi 5: about 3800); the pool's
    placement.nodeMemoryReserveMiB is kept back from it as on a cluster. None: the default
    budget (inventory.DEFAULT_NODE_MEMORY_MIB)."""

    name: str
    accelerator: str
    labels: dict[str, str] = field(default_factory=dict)
    slowdown: float = 1.0
    memory_mib: int | None = None


def default_nodes(count: int, pool_labels: dict[str, str]) -> list[NodeSpec]:
    """A mixed floor: every third node a Hailo-8, the rest Hailo-8L, over two lines."""
    return [
        NodeSpec(
            name=f"pi-{i + 1:02d}",
            accelerator="hailo8" if i % 3 == 2 else "hailo8l",
            labels={**pool_labels, "hatswarm.io/line": f"line-{'ab'[i % 2]}"},
        )
        for i in range(count)
    ]


def load_nodes_file(path: Path, pool_labels: dict[str, str]) -> list[NodeSpec]:
    """`--nodes-file`: a YAML list of {name, accelerator, labels, slowdown, memoryMiB}."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty YAML list of nodes")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError(f"{path}: node {i} needs at least a name")
        acc = item.get("accelerator", "hailo8l")
        if acc not in ACCELERATORS:
            raise ValueError(f"{path}: node {item['name']}: accelerator {acc!r} is not known")
        out.append(
            NodeSpec(
                name=str(item["name"]),
                accelerator=acc,
                labels={
                    **pool_labels,
                    **{str(k): str(v) for k, v in item.get("labels", {}).items()},
                },
                slowdown=float(item.get("slowdown", 1.0)),
                memory_mib=_memory_mib(path, item),
            )
        )
    return out


def _memory_mib(path: Path, item: dict[str, Any]) -> int | None:
    """A node's `memoryMiB` (a whole number of MiB, at least 1), if it declares one."""
    value = item.get("memoryMiB")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{path}: node {item['name']}: memoryMiB must be a whole number of MiB >= 1, "
            f"not {value!r}"
        )
    return value


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def agent_command() -> list[str]:
    exe = Path(sys.executable).parent / "hatswarm-agent"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hatswarm_agent.cli"]


@dataclass
class LocalAgent:
    spec: NodeSpec
    proc: subprocess.Popen[str]
    address: str
    log_path: Path
    metrics_port: int = 0
    http_port: int = 0  # the HTTP doors: OpenAI /v1, Ollama /api, KServe v2 REST /v2

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: what a node losing power looks like to the pool."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.proc, timeout)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, picked below the kernel's ephemeral range.

    A port from `bind(0)` comes from the ephemeral range, where every `--port 0` listener and
    outgoing connection on the host also draws: between our probe and the agent's bind one of
    them can take it (CI saw it). Below that range only explicit binds compete.
    """
    low, high = _unreserved_ports()
    for _ in range(64):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


def _unreserved_ports() -> tuple[int, int]:
    """Ports from 20000 up to the ephemeral range's start (Linux default 32768)."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return (20000, first - 1) if first > 21000 else (49152, 65535)


def start_agent(
    spec: NodeSpec, state_dir: Path, timeout: float = 60.0, extra_args: Sequence[str] = ()
) -> LocalAgent:
    """Start one simulated node's agent (with /metrics and the HTTP doors) and wait for its
    ready line.

    `extra_args` go to every agent alike (the pool's `--auth-token-file`, `--tls-*`).
    A port picked free can be taken by another process before the agent binds it (other
    agents' `--port 0` draw from the same ephemeral range): such a start is retried with
    fresh ports, any other failure is raised at once.
    """
    for attempt in range(PORT_ATTEMPTS):
        try:
            return _start_agent_once(spec, state_dir, timeout, extra_args)
        except PortTakenError:
            if attempt == PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


PORT_ATTEMPTS = 5


class PortTakenError(RuntimeError):
    """The agent exited because a port chosen for it was taken meanwhile."""


def _start_agent_once(
    spec: NodeSpec, state_dir: Path, timeout: float, extra_args: Sequence[str]
) -> LocalAgent:
    metrics_port, http_port = free_port(), free_port()
    node_dir = state_dir / "nodes" / spec.name
    node_dir.mkdir(parents=True, exist_ok=True)
    log_path = node_dir / "agent.log"
    log: IO[str] = log_path.open("w")
    cmd = [
        *agent_command(),
        "--host", "127.0.0.1", "--port", "0",
        "--node-name", spec.name,
        "--accelerator", spec.accelerator,
        "--backend", "simulated",
        "--state-dir", str(node_dir / "state"),
        "--log-level", "WARNING",
        "--metrics-port", str(metrics_port),
        "--http-port", str(http_port),
        "--await-routing-table",
    ]  # fmt: skip
    if spec.slowdown != 1.0:
        cmd += ["--option", f"slowdown={spec.slowdown}"]
    cmd += list(extra_args)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(READY_PREFIX) and not found:
                found.append(line[len(READY_PREFIX) :].strip())

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=10)
            tail = log_path.read_text(errors="replace")[-2000:]
            kind = PortTakenError if "already in use" in tail else RuntimeError
            raise kind(f"agent {spec.name} did not start: {tail}")
        time.sleep(0.02)
    return LocalAgent(spec, proc, found[0], log_path, metrics_port, http_port)


@dataclass
class LocalPrometheus:
    """A real Prometheus server (Debian's `prometheus`) on loopback scraping the local pool."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    async def ready(self, within: float = 60.0) -> None:
        """Wait for `/-/ready`: until then Prometheus answers its API with a plain-text 503.

        The URL is announced only after this, so a user (or a test) that queries it at once gets
        JSON, not "Service Unavailable" while the TSDB is still opening."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"prometheus exited with code {self.proc.returncode}:\n{tail}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/-/ready")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"prometheus at {self.url} not ready after {within:.0f} s")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc)


def prometheus_config(agents: list[LocalAgent], loop_port: int, pool: str) -> dict[str, Any]:
    """Jobs and labels as deploy/observability/prometheus-scrape.yaml gives them in a cluster."""
    return {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            {
                "job_name": "hatswarm-agent",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{a.metrics_port}"],
                        "labels": {"node": a.spec.name, "pool": pool},
                    }
                    for a in agents
                ],
            },
            {
                "job_name": "hatswarm-operator",
                "static_configs": [{"targets": [f"127.0.0.1:{loop_port}"]}],
            },
        ],
    }


def start_prometheus(config: dict[str, Any], folder: Path) -> LocalPrometheus:
    """A Prometheus on a free loopback port with `config` (prometheus.yml), its data and log in
    `folder`; `ready()` says when to use it. The local pool's (`prometheus_config`) and the
    tests' (tests/prometheusproc.py) both start this way."""
    exe = shutil.which("prometheus")
    if exe is None:
        raise FileNotFoundError(
            "prometheus is not installed: `apt-get install prometheus` (Debian) or `make tools`"
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as stderr:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={path}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return LocalPrometheus(proc, f"http://127.0.0.1:{port}", log)


def bundled_model(state_dir: Path) -> tuple[Path, str]:
    """A small real CNN that ships inside the `onnx` package (ShuffleNet, constant weights)."""
    import onnx  # the test/dev extra; imported lazily so the operator image need not carry it

    src = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / BUNDLED_MODEL
    if not src.exists():
        raise FileNotFoundError(f"{src} is missing: install the `onnx` package")
    dst = state_dir / "models" / "shufflenet.onnx"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst, hashlib.sha256(dst.read_bytes()).hexdigest()


def bundled_manifests(state_dir: Path) -> list[dict[str, Any]]:
    """The example pool `hatswarm up` runs when given no manifests: works offline."""
    path, digest = bundled_model(state_dir)
    return [
        {
            "apiVersion": "hatswarm.io/v1alpha1",
            "kind": "InferencePool",
            "metadata": {"name": "local", "namespace": "default"},
            "spec": {
                "nodeSelector": {"hatswarm.io/pool": "local"},
                "agent": {"backend": "simulated"},
                "failureDetection": {"probeIntervalSeconds": 0.5, "failureThreshold": 3},
                "routing": {"retries": ROUTE_RETRIES, "timeoutMs": ROUTE_TIMEOUT_MS},
            },
        },
        {
            "apiVersion": "hatswarm.io/v1alpha1",
            "kind": "EdgeModel",
            "metadata": {"name": "shufflenet", "namespace": "default"},
            "spec": {
                "pool": "local",
                "version": "1.0.0",
                "artifacts": [
                    {
                        "accelerator": "cpu",
                        "format": "onnx",
                        "uri": path.resolve().as_uri(),
                        "sha256": digest,
                    }
                ],
                "replicas": {"min": 1, "max": 3, "desired": 2},
                "placement": {"spreadKey": "hatswarm.io/line"},
                "cache": {"enabled": True, "ttlSeconds": 60},
                "costAttribution": {"team": "demo"},
            },
        },
    ]
