"""`hatswarm up --nodes-file` with nodes of different memory: the local control loop places a
model declaring 1500 MiB only on the node with room for it (each node's memoryMiB less the
pool's reserve), says why the second replica is missing, and shows each node's budget."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.onnxmodels import build_mlp
from tests.polling import poll
from tests.upproc import Up

pytestmark = pytest.mark.integration


def manifests(tmp: Path) -> Path:
    mlp = build_mlp(tmp / "mlp.onnx", in_dim=8, hidden=16, out=4)
    pool = {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "local", "namespace": "default"},
        "spec": {
            "nodeSelector": {"hatswarm.io/pool": "local"},
            "agent": {"backend": "simulated"},
            "failureDetection": {"probeIntervalSeconds": 0.5, "failureThreshold": 3},
            "placement": {"nodeMemoryReserveMiB": 400},
        },
    }
    model = {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": "mid", "namespace": "default"},
        "spec": {
            "pool": "local",
            "version": "1",
            "artifacts": [
                {
                    "accelerator": "cpu",
                    "format": "onnx",
                    "uri": mlp.resolve().as_uri(),
                    "sha256": hashlib.sha256(mlp.read_bytes()).hexdigest(),
                    "memoryMiB": 1500,
                }
            ],
            "replicas": {"min": 1, "max": 2, "desired": 2},
        },
    }
    out = tmp / "manifests"
    out.mkdir()
    (out / "pool.yaml").write_text(yaml.safe_dump(pool))
    (out / "mid.yaml").write_text(yaml.safe_dump(model))
    return out


def test_up_places_by_each_nodes_declared_memory(tmp_path: Path) -> None:
    found = manifests(tmp_path)
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(
        yaml.safe_dump(
            [
                {"name": "pi-2gb", "memoryMiB": 1800},
                {"name": "pi-8gb", "memoryMiB": 7700},
            ]
        )
    )
    with Up(tmp_path / "state", "-f", str(found), "--nodes-file", str(nodes)) as up:

        def ready() -> list[str]:
            placements = up.model("mid").get("placements", [])
            return sorted(p["node"] for p in placements if p["state"] == "Ready")

        def degraded() -> dict[str, Any]:
            conds = {c["type"]: c for c in up.model("mid").get("conditions", [])}
            cond: dict[str, Any] = conds.get("Degraded", {})
            return cond if cond.get("status") == "True" else {}

        assert poll(lambda: ready() == ["pi-8gb"] and degraded(), within=120), up.output
        why = degraded()
        assert why["reason"] == "InsufficientCapacity"
        assert "1 short of memory (at most 1400 MiB free on one)" in why["message"], why
        pool = up.status()["pools"]["local"]
        memory = {n["name"]: (n["memoryMiB"], n["memoryUsedMiB"]) for n in pool["nodes"]}
        assert memory == {"pi-2gb": (1400, 0), "pi-8gb": (7300, 1500)}
