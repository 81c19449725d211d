"""A Node's status.allocatable.memory becomes its NodeState's memory budget (plain data)."""

from __future__ import annotations

from typing import Any

import pytest
from hatswarm_operator.core.inventory import DEFAULT_NODE_MEMORY_MIB, ContainerCap
from hatswarm_operator.kube.sources import memory_mib, node_states, node_view, pod_view


@pytest.mark.parametrize(
    ("quantity", "mib"),
    [
        ("7901784Ki", 7716),  # what the kubelet of an 8 GB Pi 5 reports
        ("8Gi", 8192),
        ("8G", 7629),  # decimal: 8e9 bytes
        ("512Mi", 512),
        ("1.5Gi", 1536),
        ("8589934592", 8192),  # plain bytes
        (8589934592, 8192),
        ("1048575", 0),  # under a MiB rounds down
        ("16e9", 15258),
    ],
)
def test_memory_quantities_in_whole_mib(quantity: object, mib: int) -> None:
    assert memory_mib(quantity) == mib


@pytest.mark.parametrize(
    "quantity", [None, "", "lots", "8GB", "-1Gi", "NaN", "Infinity", True, "1e999999999"]
)
def test_what_is_not_a_memory_quantity_is_none(quantity: object) -> None:
    assert memory_mib(quantity) is None


def node(name: str, allocatable: dict[str, Any] | None) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True"}]}
    if allocatable is not None:
        status["allocatable"] = allocatable
    return {"metadata": {"name": name, "labels": {}}, "spec": {}, "status": status}


def pod(node_name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"agent-{node_name}"},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "agent", "ports": [{"name": "grpc", "containerPort": 8001}]}],
        },
        "status": {
            "podIP": "10.0.0.5",
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def test_node_states_budget_allocatable_memory_less_the_reserve() -> None:
    nodes = [
        node("pi-2gb", {"cpu": "4", "memory": "1959868Ki", "pods": "110"}),
        node("pi-16gb", {"memory": "16Gi"}),
        node("pi-bare", {"cpu": "4"}),  # no allocatable memory: the default
        node("pi-none", None),
        node("pi-odd", {"memory": "plenty"}),  # malformed: the default, not an empty node
    ]
    views = {v.name: v for v in map(node_view, nodes)}
    assert views["pi-2gb"].memory_mib == 1913
    assert views["pi-bare"].memory_mib is None
    pods = [pod(n["metadata"]["name"]) for n in nodes]
    budgets = {s.name: s.memory_mib for s in node_states(views, map(pod_view, pods), 512)}
    assert budgets == {
        "pi-2gb": 1913 - 512,
        "pi-16gb": 16384 - 512,
        "pi-bare": DEFAULT_NODE_MEMORY_MIB,
        "pi-none": DEFAULT_NODE_MEMORY_MIB,
        "pi-odd": DEFAULT_NODE_MEMORY_MIB,
    }
    no_reserve = {s.name: s.memory_mib for s in node_states(views, map(pod_view, pods), 0)}
    assert no_reserve["pi-2gb"] == 1913
    default = {s.name: s.memory_mib for s in node_states(views, map(pod_view, pods))}
    assert default["pi-16gb"] == 16384 - 512  # the API's default reserve


def test_a_changed_allocatable_is_a_changed_node_view() -> None:
    """The Node informer rebuilds NodeStates only when a view changes: a resized node must."""
    before = node_view(node("pi", {"memory": "4Gi"}))
    after = node_view(node("pi", {"memory": "8Gi"}))
    assert before != after
    assert before == node_view(node("pi", {"memory": "4096Mi"}))


def test_node_states_stay_within_the_agent_containers_limit() -> None:
    """A cap lower than the node's own budget sets it and says so; a higher one is silent."""
    nodes = [node("pi-2gb", {"memory": "1959868Ki"}), node("pi-8gb", {"memory": "7901784Ki"})]
    views = {v.name: v for v in map(node_view, nodes)}
    pods = [pod(n["metadata"]["name"]) for n in nodes]
    cap = ContainerCap("2Gi", 2048, 256)
    states = {s.name: s for s in node_states(views, map(pod_view, pods), 512, cap)}
    assert {k: s.memory_mib for k, s in states.items()} == {"pi-2gb": 1401, "pi-8gb": 1792}
    assert states["pi-2gb"].memory_cap == ""  # its own memory binds
    assert "memory limit 2Gi" in states["pi-8gb"].memory_cap
