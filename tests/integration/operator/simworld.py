"""A pool of simulated agents (bench/simfleet.py) in the emulated cluster, for the operator.

Real agents cannot say how often they were asked to load a model (a second LoadModel of a
READY version answers at once, and `loadedAt` does not move); the simulated fleet counts
every AgentControl call per node, which is what "no duplicate loads" is measured by. Each
simulated node is its own gRPC server on its own port, in a few worker processes; the test
plays the kubelet: a Ready Node and a Running agent Pod per node, pointing at that port.
simfleet.py lives in bench/ (the fleet benchmark uses it too) and is imported from there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.kubeemu import Store

BENCH = Path(__file__).resolve().parents[3] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from simfleet import SimFleet  # noqa: E402 (bench/ on sys.path)

__all__ = ["SimFleet", "add_nodes", "model", "pool", "sim_fleet"]


@contextmanager
def sim_fleet(count: int, *, load_s: float = 0.3, processes: int = 2) -> Iterator[SimFleet]:
    names = [f"sim-{i:02d}" for i in range(count)]
    with SimFleet(names, processes=processes, load_s=load_s) as fleet:
        yield fleet


def add_nodes(store: Store, fleet: SimFleet, pool_name: str = "floor") -> None:
    """A Ready Node and a Running agent Pod for every simulated node."""
    for name in fleet.names:
        store.put(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"hatswarm.io/pool": pool_name}},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
        )
        store.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": agent_pod(name, pool_name),
                    "namespace": "default",
                    "labels": {
                        "app.kubernetes.io/name": "hatswarm-agent",
                        "hatswarm.io/pool": pool_name,
                    },
                },
                "spec": {
                    "nodeName": name,
                    "containers": [
                        {
                            "name": "agent",
                            "image": "hatswarm/agent:test",
                            "ports": [{"name": "grpc", "containerPort": fleet.ports[name]}],
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


def agent_pod(node: str, pool_name: str = "floor") -> str:
    return f"hatswarm-agent-{pool_name}-{node}"


def pool(name: str = "floor") -> dict[str, Any]:
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeSelector": {"hatswarm.io/pool": name},
            "accelerators": ["hailo8l", "hailo8", "cpu"],
            "agent": {"backend": "simulated", "image": "hatswarm/agent:test"},
            "failureDetection": {"probeIntervalSeconds": 0.5, "failureThreshold": 3},
        },
    }


def model(name: str, replicas: int = 2, pool_name: str = "floor") -> dict[str, Any]:
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "pool": pool_name,
            "version": "1.0.0",
            "artifacts": [
                {
                    "accelerator": acc,
                    "format": fmt,
                    "uri": f"https://models.example/{name}.{fmt}",
                    "sha256": f"{k:064x}",
                }
                for k, (acc, fmt) in enumerate(
                    (("hailo8l", "hef"), ("hailo8", "hef"), ("cpu", "onnx")), start=1
                )
            ],
            "replicas": {"min": 1, "max": 4, "desired": replicas},
            "resources": {"memoryMiB": 128, "npuContexts": 1},
        },
    }
