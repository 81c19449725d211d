"""Each node offers placement its allocatable memory less the pool's reserve.

Two CPU nodes, as a 2 GB and an 8 GB Pi 5 report `status.allocatable.memory` to Kubernetes.
The real operator (kopf, against the emulated API) must place a model declaring 1500 MiB only on
the 8 GB node (the 2 GB one offers 1913 - 512 = 1401 MiB), say in the EdgeModel's status why the
second replica is missing, refuse a model bigger than any node with the reason, and show each
node's budget and use in the pool's status. With the reserve set to 0 the small node takes the
second replica.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.harness import World, model_manifest, pool_manifest, wait_for

pytestmark = pytest.mark.integration

PI_2GB, PI_8GB = "1959868Ki", "7901784Ki"  # 1913 and 7716 MiB


# An agent container that holds what the 8 GB node offers (the built-in limit, 1Gi, would cap
# every node at 768 MiB: test_container_cap.py).
ROOMY_AGENT = {
    "backend": "onnxruntime",
    "image": "hatswarm/agent:test",
    "resources": {"limits": {"memory": "8Gi"}},
}


def with_memory(manifest: dict[str, Any], mib: int) -> dict[str, Any]:
    manifest["spec"]["artifacts"][0]["memoryMiB"] = mib
    return manifest


def degraded(world: World, model: str) -> dict[str, Any]:
    cond = world.condition("EdgeModel", model, "Degraded")
    return cond if cond.get("status") == "True" else {}


def test_models_place_by_each_nodes_memory(world: World, mlp: Path) -> None:
    world.add_node("pi-2gb", allocatable_memory=PI_2GB)
    world.add_node("pi-8gb", allocatable_memory=PI_8GB)
    mid = with_memory(model_manifest("mid", mlp, replicas=2), 1500)
    huge = with_memory(model_manifest("huge", mlp, replicas=1), 8000)
    tiny = model_manifest("tiny", mlp, replicas=2)  # resources.memoryMiB 64: fits both
    world.kube.apply(pool_manifest("floor", agent=ROOMY_AGENT), mid, huge, tiny)
    world.start_operator()

    wait_for(lambda: world.ready_on("tiny") == ["pi-2gb", "pi-8gb"], timeout=120, what="tiny")
    wait_for(lambda: world.ready_on("mid") == ["pi-8gb"], timeout=60, what="mid on pi-8gb")
    why = wait_for(lambda: degraded(world, "mid"), timeout=60, what="mid Degraded")
    assert why["reason"] == "InsufficientCapacity"
    assert "placed 1 of 2" in why["message"] and "(1500 MiB on cpu, " in why["message"]
    assert "1 short of memory (at most 1337 MiB free on one)" in why["message"], why

    why = wait_for(lambda: degraded(world, "huge"), timeout=60, what="huge Degraded")
    assert why["reason"] == "InsufficientCapacity"
    assert re.search(r"2 short of memory \(at most \d+ MiB free on one\)", why["message"]), why
    assert world.ready_on("huge") == []
    wait_for(lambda: world.events("huge", "InsufficientCapacity"), timeout=30, what="the Event")

    def memory() -> dict[str, tuple[int, int]]:
        nodes = world.status("InferencePool", "floor").get("nodes") or []
        return {n["name"]: (n.get("memoryMiB"), n.get("memoryUsedMiB")) for n in nodes}

    wait_for(
        lambda: memory() == {"pi-2gb": (1401, 64), "pi-8gb": (7204, 1564)},
        timeout=30,
        what=f"the pool's node memory (last {memory()})",
    )

    # No reserve: the 2 GB node offers all 1913 MiB, and the second replica of mid fits there.
    world.kube.apply(
        pool_manifest("floor", agent=ROOMY_AGENT, placement={"nodeMemoryReserveMiB": 0})
    )
    wait_for(lambda: world.ready_on("mid") == ["pi-2gb", "pi-8gb"], timeout=60, what="mid on both")
    wait_for(
        lambda: memory() == {"pi-2gb": (1913, 1564), "pi-8gb": (7716, 1564)},
        timeout=30,
        what=f"the pool's node memory without a reserve (last {memory()})",
    )
    assert world.ready_on("huge") == []
