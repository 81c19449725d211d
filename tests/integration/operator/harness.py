"""A small world for the operator: emulated Kubernetes, real agents behind emulated Pods.

The test plays the kubelet and the DaemonSet controller: for each node it starts a real
`hatswarm-agent` on loopback (allowed to read the test's model files, as a pool's
`agent.fileRoots` would allow) and puts a Node and a Ready agent Pod (podIP 127.0.0.1, container
port `grpc` = the agent's port) into the emulator. The operator is the real
`hatswarm-operator` console script in a subprocess, aimed at the emulator by KUBECONFIG.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc

from tests.agentproc import AgentProcess, free_port, start_agent, start_agents
from tests.kubeemu import KubeApi

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
OPERATOR = Path(sys.executable).parent / "hatswarm-operator"
T = TypeVar("T")


def wait_for(
    fn: Callable[[], T], *, timeout: float = 90.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll `fn` until it returns something truthy (bounded; never a timed assertion)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as err:  # the condition may not be evaluable yet
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: last={last!r}")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pool_manifest(name: str = "floor", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeSelector": {"hatswarm.io/pool": name},
            "accelerators": ["cpu"],
            "agent": {"backend": "onnxruntime", "image": "hatswarm/agent:test"},
            "failureDetection": {"probeIntervalSeconds": 0.5, "failureThreshold": 3},
            **spec,
        },
    }


def model_manifest(
    name: str, artifact: Path, pool: str = "floor", replicas: int = 2
) -> dict[str, Any]:
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "pool": pool,
            "version": "1.0.0",
            "artifacts": [
                {
                    "accelerator": "cpu",
                    "format": "onnx",
                    "uri": artifact.resolve().as_uri(),
                    "sha256": sha256_of(artifact),
                }
            ],
            "replicas": {"min": 1, "max": 3, "desired": replicas},
            "resources": {"memoryMiB": 64, "npuContexts": 1},
        },
    }


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    health_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class World:
    kube: KubeApi
    tmp: Path
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    operators: list[Operator] = field(default_factory=list)

    @property
    def store(self) -> Any:
        return self.kube.store

    def install_crds(self) -> None:
        self.kube.kubectl("apply", "-f", str(CRDS), check=True)

    # --- nodes and agents ----------------------------------------------------------------

    CPU_AGENT = ("--backend", "onnxruntime", "--accelerator", "cpu")

    def add_node(
        self,
        name: str,
        pool: str = "floor",
        *,
        agent_args: tuple[str, ...] = CPU_AGENT,
        env: dict[str, str] | None = None,
        allocatable_memory: str | None = None,
        **labels: str,
    ) -> AgentProcess:
        """A Node with labels (and `status.allocatable.memory`, a quantity, if given), a real
        agent (`agent_args`, `env`), and its Ready agent Pod."""
        self._put_node(name, pool, labels, allocatable_memory)
        agent = start_agent(self._agent_args(name, agent_args), env=env)
        self._put_pod(name, pool, agent)
        return agent

    def add_nodes(self, *names: str, pool: str = "floor") -> list[AgentProcess]:
        """Nodes as `add_node` makes them, their agents started side by side."""
        for name in names:
            self._put_node(name, pool, {})
        agents = start_agents([self._agent_args(name, self.CPU_AGENT) for name in names])
        for name, agent in zip(names, agents, strict=True):
            self._put_pod(name, pool, agent)
        return agents

    def _agent_args(self, name: str, agent_args: tuple[str, ...]) -> list[str]:
        state = self.tmp / f"state-{name}"
        state.mkdir(exist_ok=True)
        return [
            "--node-name",
            name,
            *agent_args,
            "--state-dir",
            str(state),
            "--allow-file-root",
            str(self.tmp),
        ]

    def _put_node(
        self, name: str, pool: str, labels: dict[str, str], memory: str | None = None
    ) -> None:
        status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True"}]}
        if memory is not None:
            status["allocatable"] = {"cpu": "4", "memory": memory, "pods": "110"}
        self.store.put(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"hatswarm.io/pool": pool, **labels}},
                "spec": {},
                "status": status,
            }
        )

    def _put_pod(self, name: str, pool: str, agent: AgentProcess) -> None:
        self.agents[name] = agent
        self.store.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"hatswarm-agent-{pool}-{name}",
                    "namespace": "default",
                    "labels": {
                        "app.kubernetes.io/name": "hatswarm-agent",
                        "hatswarm.io/pool": pool,
                    },
                },
                "spec": {
                    "nodeName": name,
                    "containers": [
                        {
                            "name": "agent",
                            "image": "hatswarm/agent:test",
                            "ports": [{"name": "grpc", "containerPort": agent.port}],
                        }
                    ],
                },
                "status": {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )

    def node_status(self, node: str) -> control_pb2.NodeStatusResponse:
        with grpc.insecure_channel(self.agents[node].address) as ch:
            resp: control_pb2.NodeStatusResponse = control_pb2_grpc.AgentControlStub(ch).NodeStatus(
                control_pb2.NodeStatusRequest(), timeout=5
            )
            return resp

    def ready_on(self, model: str) -> list[str]:
        """Nodes whose (live) agent reports `model` READY."""
        out = []
        for node, agent in sorted(self.agents.items()):
            if agent.proc.poll() is not None:
                continue
            try:
                status = self.node_status(node)
            except grpc.RpcError:
                continue
            if any(
                m.name == model and m.state == control_pb2.MODEL_STATE_READY for m in status.models
            ):
                out.append(node)
        return out

    def loaded_at(self, model: str) -> dict[str, int]:
        out = {}
        for node in self.ready_on(model):
            for m in self.node_status(node).models:
                if m.name == model:
                    out[node] = m.loaded_at_unix_ms
        return out

    # --- the operator ----------------------------------------------------------------------

    def start_operator(self, *extra: str, standalone: bool = True) -> Operator:
        """The real `hatswarm-operator`; `standalone=False` peers (pass `--priority` etc.)."""
        n = len(self.operators)
        log_path = self.tmp / f"operator-{n}.log"
        metrics_port, health_port = free_port(), free_port()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    str(OPERATOR), *(["--standalone"] if standalone else []), "--all-namespaces",
                    "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
                    "--liveness", f"http://127.0.0.1:{health_port}/healthz",
                    "--log-format", "plain", *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.kube.env(PYTHONUNBUFFERED="1"),
            )  # fmt: skip
        op = Operator(proc, log_path, metrics_port, health_port)
        self.operators.append(op)
        return op

    # --- reading the emulator ----------------------------------------------------------------

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [o for o in self.store.find(kind, "default") if o["metadata"]["name"] == name]
        return found[0] if found else None

    def status(self, kind: str, name: str) -> dict[str, Any]:
        obj = self.get(kind, name)
        return (obj or {}).get("status") or {}

    def condition(self, kind: str, name: str, type_: str = "Ready") -> dict[str, Any]:
        for c in self.status(kind, name).get("conditions") or []:
            if c.get("type") == type_:
                return dict(c)
        return {}

    def events(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.store.find("Event", "default")
            if (e.get("involvedObject") or {}).get("name") == name
            and (reason is None or e.get("reason") == reason)
        ]

    def close(self) -> None:
        for op in self.operators:
            op.stop()
        for agent in self.agents.values():
            agent.stop()
