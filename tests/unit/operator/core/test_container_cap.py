"""Placement fills a node no further than the agent container may hold: plain data, no cluster.

The models run inside the agent container, so an 8 GB Pi whose agent is limited to 1Gi cannot
take a 1500 MiB model whatever its allocatable memory says: past the limit the kernel kills the
agent (OOMKilled) and every model on the node with it.
"""

from __future__ import annotations

import pytest
from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.inferencepool import DEFAULT_AGENT_MEMORY_BASELINE_MIB, memory_limit_mib
from hatswarm_operator.core.inventory import (
    DEFAULT_NODE_MEMORY_MIB,
    ContainerCap,
    container_cap,
    memory_budget,
)
from hatswarm_operator.core.reconcile import plan_pool
from pydantic import ValidationError

from tests.unit.operator.factories import (
    POOL_LABELS,
    condition,
    make_model,
    make_node,
    make_pool,
    pool_manifest,
)
from tests.unit.operator.pimemory import PI_2GB, PI_8GB, cpu_node, make_llm


def limited(memory: object, **placement: int) -> InferencePool:
    return make_pool(
        generation=1,
        nodeSelector=POOL_LABELS,
        agent={"resources": {"limits": {"memory": memory}}},
        placement=placement,
    )


@pytest.mark.parametrize(
    ("quantity", "mib"),
    [
        ("1Gi", 1024),
        ("2Gi", 2048),
        ("1.5Gi", 1536),
        ("1500Mi", 1500),
        ("2G", 1907),  # 2e9 bytes
        ("2e9", 1907),
        ("1048576Ki", 1024),
        (2147483648, 2048),  # a YAML int: bytes
        ("512", 0),  # 512 bytes
    ],
)
def test_memory_limits_read_as_kubernetes_quantities(quantity: object, mib: int) -> None:
    assert memory_limit_mib({"limits": {"memory": quantity}}) == (str(quantity), mib)


def test_no_limit_no_cap() -> None:
    assert memory_limit_mib({}) is None
    assert memory_limit_mib({"requests": {"memory": "1Gi"}}) is None
    pool = make_pool(agent={"resources": {"requests": {"cpu": "250m"}}})
    assert container_cap(pool) is None


@pytest.mark.parametrize("bad", ["lots", "1 Gi", "-1Gi", "1GB", True, ["1Gi"]])
def test_a_limit_that_is_no_quantity_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"agent.resources.limits.memory: not a Kubernetes"):
        InferencePool.model_validate(
            pool_manifest(agent={"resources": {"limits": {"memory": bad}}})
        )


def test_the_cap_is_the_limit_less_the_agents_baseline() -> None:
    cap = container_cap(limited("1Gi"))
    assert cap == ContainerCap("1Gi", 1024, DEFAULT_AGENT_MEMORY_BASELINE_MIB)
    assert DEFAULT_AGENT_MEMORY_BASELINE_MIB == 256 and cap.budget_mib == 768
    assert "1Gi (spec.agent.resources.limits.memory)" in str(cap)
    custom = container_cap(limited("2Gi", agentMemoryBaselineMiB=0))
    assert custom is not None and custom.budget_mib == 2048
    assert ContainerCap("128Mi", 128, 256).budget_mib == 0  # never below 0
    # The built-in agent settings carry a limit (the chart's agentDefaults set 2Gi).
    default = container_cap(make_pool())
    assert default is not None and default.limit == "2Gi"


def test_the_budget_is_the_smaller_of_node_and_container() -> None:
    cap = ContainerCap("1Gi", 1024, 256)
    assert memory_budget(PI_8GB, 512, cap) == 768  # the container binds
    assert memory_budget(PI_2GB, 512, cap) == 768
    assert memory_budget(1000, 512, cap) == 488  # the node binds
    assert memory_budget(PI_8GB, 512, None) == 7204
    # A node that reports nothing keeps the default budget, the cap still applies.
    assert memory_budget(None, 512, cap) == 768
    assert memory_budget(None, 512, ContainerCap("8Gi", 8192, 256)) == DEFAULT_NODE_MEMORY_MIB


def test_a_1gi_agent_refuses_a_1500_mib_model_on_an_8gb_node_and_says_why() -> None:
    pool = limited("1Gi")
    cap = container_cap(pool)
    assert cap is not None
    llm = make_llm()
    big = cpu_node("n8", PI_8GB, cap, memory_cap=str(cap))
    plan = plan_pool(pool, [llm], [big], now=0)
    assert plan.loads == []
    degraded = condition(plan, "llm", "Degraded")
    assert degraded.status == "True" and degraded.reason == "InsufficientCapacity"
    assert "1 short of memory (at most 768 MiB free on one)" in degraded.message
    assert "memory limit 1Gi (spec.agent.resources.limits.memory)" in degraded.message
    assert {n.name: n.memory_mi_b for n in plan.pool_status.nodes} == {"n8": 768}

    # A 2Gi limit (the chart's default) holds it: 2048 - 256 = 1792 MiB.
    roomy = container_cap(limited("2Gi"))
    assert roomy is not None
    big = cpu_node("n8", PI_8GB, roomy)
    plan = plan_pool(limited("2Gi"), [llm], [big], now=0)
    assert [(ld.model, ld.node) for ld in plan.loads] == [("llm", "n8")]


def test_a_node_short_by_its_own_memory_does_not_blame_the_container() -> None:
    pool = limited("8Gi")
    llm = make_llm()
    small = cpu_node("n2", PI_2GB)
    plan = plan_pool(pool, [llm], [small], now=0)
    degraded = condition(plan, "llm", "Degraded")
    assert "at most 1401 MiB free on one" in degraded.message
    assert "container" not in degraded.message


def test_a_model_short_of_npu_contexts_only_does_not_blame_the_container() -> None:
    pool = make_pool(generation=1, nodeSelector=POOL_LABELS, accelerators=["hailo8l"])
    cap = ContainerCap("1Gi", 1024, 256)
    full = make_node("n1", memory_mib=cap.budget_mib, memory_cap=str(cap), npu_contexts=0)
    hef = {"accelerator": "hailo8l", "format": "hef", "uri": "file:///m.hef", "sha256": "a" * 64}
    plan = plan_pool(pool, [make_model("det", replicas=1, artifacts=[hef])], [full], now=0)
    degraded = condition(plan, "det", "Degraded")
    assert degraded.reason == "InsufficientCapacity"
    assert "0 short of memory, 1 short of NPU contexts" in degraded.message
    assert "container" not in degraded.message
