"""Each node offers placement its own memory, less the pool's reserve: plain data, no cluster.

A mixed floor of Pi 5s (2, 4, 8, 16 GB) must not be placed as if every node had the same room:
a 1.5B decoder (~1500 MiB) fits an 8 GB Pi and not a 2 GB one.
"""

from __future__ import annotations

import pytest
from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.inferencepool import DEFAULT_NODE_MEMORY_RESERVE_MIB
from hatswarm_operator.core import placement as pl
from hatswarm_operator.core.inventory import DEFAULT_NODE_MEMORY_MIB, memory_budget
from hatswarm_operator.core.reconcile import plan_pool
from pydantic import ValidationError

from tests.unit.operator.factories import (
    POOL_LABELS,
    condition,
    make_model,
    make_pool,
    pool_manifest,
)
from tests.unit.operator.pimemory import PI_2GB, PI_8GB, cpu_node, make_llm


def test_budget_is_allocatable_less_the_reserve() -> None:
    assert memory_budget(PI_8GB, 512) == 7204
    assert memory_budget(PI_2GB, 0) == PI_2GB
    assert memory_budget(300, 512) == 0  # a reserve larger than the node leaves nothing


def test_a_node_that_reports_no_memory_keeps_the_default_budget() -> None:
    assert memory_budget(None, 512) == DEFAULT_NODE_MEMORY_MIB == 3072
    assert memory_budget(None, 0) == DEFAULT_NODE_MEMORY_MIB


def test_the_reserve_defaults_to_512_and_may_not_be_negative() -> None:
    pool = make_pool()
    assert pool.spec.placement.node_memory_reserve_mi_b == DEFAULT_NODE_MEMORY_RESERVE_MIB == 512
    custom = make_pool(placement={"nodeMemoryReserveMiB": 0})
    assert custom.spec.placement.node_memory_reserve_mi_b == 0
    with pytest.raises(ValidationError, match="nodeMemoryReserveMiB"):
        InferencePool.model_validate(pool_manifest(placement={"nodeMemoryReserveMiB": -1}))


def test_a_2gb_node_refuses_a_model_an_8gb_node_takes() -> None:
    reserve = 512
    nodes = [
        pl.Node("pi-2gb", "cpu", memory_budget(PI_2GB, reserve)),
        pl.Node("pi-8gb", "cpu", memory_budget(PI_8GB, reserve)),
    ]
    llm = pl.Model(
        "qwen-1.5b",
        (pl.Artifact("cpu", "onnx", "file:///q.tar.gz", "a" * 64, memory_mib=1500),),
        replicas=2,
        memory_mib=256,
        task="generate",
    )
    result = pl.place(nodes, [llm])
    assert [r.node for r in result.replicas] == ["pi-8gb"]
    (u,) = result.unplaced
    assert u.reason is pl.Reason.INSUFFICIENT_CAPACITY
    assert "1 short of memory (at most 1401 MiB free on one)" in u.message
    # With room on both (the same model at 0.5B size) both take a replica.
    small = pl.Model(
        "qwen-0.5b",
        (pl.Artifact("cpu", "onnx", "file:///s.tar.gz", "b" * 64, memory_mib=700),),
        replicas=2,
        memory_mib=256,
        task="generate",
    )
    assert sorted(r.node for r in pl.place(nodes, [small]).replicas) == ["pi-2gb", "pi-8gb"]


def test_a_16gb_node_takes_more_than_a_4gb_one() -> None:
    nodes = [
        pl.Node("pi-4gb", "cpu", memory_budget(3796, 512)),
        pl.Node("pi-16gb", "cpu", memory_budget(15810, 512)),
    ]
    models = [
        pl.Model(
            f"m{i}",
            (pl.Artifact("cpu", "onnx", f"file:///m{i}", "c" * 64, memory_mib=1200),),
            replicas=1,
            memory_mib=256,
        )
        for i in range(12)
    ]
    per_node: dict[str, int] = {}
    for r in pl.place(nodes, models).replicas:
        per_node[r.node] = per_node.get(r.node, 0) + 1
    assert per_node == {"pi-4gb": 2, "pi-16gb": 10}  # 3284 // 1200 and 12 - 2 (15298 // 1200 = 12)


def test_pool_status_shows_each_nodes_budget_and_what_is_placed() -> None:
    pool = make_pool(generation=1, nodeSelector=POOL_LABELS)
    llm = make_llm(replicas=2)
    tiny = make_model("tiny", replicas=2, resources={"memoryMiB": 64})
    small, big = cpu_node("n2", PI_2GB), cpu_node("n8", PI_8GB)
    plan = plan_pool(pool, [llm, tiny], [small, big], now=0)
    assert sorted((ld.model, ld.node) for ld in plan.loads) == [
        ("llm", "n8"),
        ("tiny", "n2"),
        ("tiny", "n8"),
    ]
    nodes = {n.name: (n.memory_mi_b, n.memory_used_mi_b) for n in plan.pool_status.nodes}
    assert nodes == {"n2": (1401, 64), "n8": (7204, 1564)}
    degraded = condition(plan, "llm", "Degraded")
    assert degraded.status == "True" and degraded.reason == "InsufficientCapacity"
    assert "at most 1337 MiB free on one" in degraded.message  # 1401 less tiny's 64
    # Serialized as the CRD names them.
    dumped = plan.pool_status.model_dump(by_alias=True, exclude_none=True)
    assert {"memoryMiB": 7204, "memoryUsedMiB": 1564}.items() <= dumped["nodes"][1].items()
