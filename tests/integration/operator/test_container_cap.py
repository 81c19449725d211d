"""No node offers placement more than its agent container may hold.

The models run inside the agent container: a pool whose agents are limited to 1Gi must not
place a model declaring 1500 MiB even on an 8 GB Pi (its node budget is 7716 - 512 = 7204 MiB),
or the kernel kills the agent and everything it serves. The real operator (kopf, against the
emulated API) must refuse it with the container limit named in the Degraded condition and the
Event, report each node's budget as the capped 768 MiB (1024 less the agent's 256 MiB), and
place the model as soon as the pool raises its limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.harness import World, model_manifest, pool_manifest, wait_for

pytestmark = pytest.mark.integration

PI_2GB, PI_8GB = "1959868Ki", "7901784Ki"  # 1913 and 7716 MiB


def agent(limit: str) -> dict[str, Any]:
    return {
        "backend": "onnxruntime",
        "image": "hatswarm/agent:test",
        "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": limit}},
    }


def test_a_1gi_agent_refuses_a_1500_mib_model_even_on_an_8gb_node(world: World, mlp: Path) -> None:
    world.add_node("pi-2gb", allocatable_memory=PI_2GB)
    world.add_node("pi-8gb", allocatable_memory=PI_8GB)
    llm = model_manifest("llm", mlp, replicas=1)
    llm["spec"]["artifacts"][0]["memoryMiB"] = 1500
    tiny = model_manifest("tiny", mlp, replicas=2)  # 64 MiB: fits any agent
    world.kube.apply(pool_manifest("floor", agent=agent("1Gi")), llm, tiny)
    world.start_operator()

    wait_for(lambda: world.ready_on("tiny") == ["pi-2gb", "pi-8gb"], timeout=120, what="tiny")

    def degraded() -> dict[str, Any]:
        cond = world.condition("EdgeModel", "llm", "Degraded")
        return cond if cond.get("status") == "True" else {}

    why = wait_for(degraded, timeout=60, what="llm Degraded")
    assert why["reason"] == "InsufficientCapacity"
    assert "2 short of memory (at most 704 MiB free on one)" in why["message"], why  # 768 - 64
    assert "memory limit 1Gi (spec.agent.resources.limits.memory)" in why["message"], why
    assert "256 MiB for the agent itself" in why["message"], why
    assert world.ready_on("llm") == []
    # The recorder posts in the background: the Event may follow the condition by a moment.
    wait_for(
        lambda: any(
            "memory limit 1Gi" in e.get("message", "")
            for e in world.events("llm", "InsufficientCapacity")
        ),
        timeout=30,
        what=f"the InsufficientCapacity Event (last {world.events('llm', 'InsufficientCapacity')})",
    )

    def memory() -> dict[str, int]:
        nodes = world.status("InferencePool", "floor").get("nodes") or []
        return {n["name"]: n.get("memoryMiB") for n in nodes}

    wait_for(
        lambda: memory() == {"pi-2gb": 768, "pi-8gb": 768},
        timeout=30,
        what=f"node budgets capped by the container (last {memory()})",
    )

    # A 2Gi agent (the chart's default) holds it: 2048 - 256 = 1792 MiB, on the 8 GB node only.
    world.kube.apply(pool_manifest("floor", agent=agent("2Gi")))
    wait_for(lambda: world.ready_on("llm") == ["pi-8gb"], timeout=60, what="llm on pi-8gb")
    wait_for(
        lambda: memory() == {"pi-2gb": 1401, "pi-8gb": 1792},
        timeout=30,
        what=f"node budgets with a 2Gi agent (last {memory()})",
    )
