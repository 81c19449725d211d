"""A floor of Raspberry Pi 5s by memory, for the tests of memory-aware placement: what a 2 GB
and an 8 GB Pi report, the CPU node the operator makes of such a report, and a generative model
big enough (a 1.5B decoder) that memory decides where it goes."""

from __future__ import annotations

from typing import Any

from hatswarm_operator.api import EdgeModel
from hatswarm_operator.core.inventory import ContainerCap, NodeState, memory_budget

from tests.unit.operator.factories import cpu_artifact, make_model, make_node

# Node status.allocatable.memory of a 2 GB and an 8 GB Pi 5 (k3s), in MiB.
PI_2GB, PI_8GB = 1913, 7716


def make_llm(name: str = "llm", *, replicas: int = 1, memory_mib: int = 1500) -> EdgeModel:
    """A generative model of one CPU artifact declaring `memory_mib` (a 1.5B decoder: ~1500)."""
    artifact = {**cpu_artifact("file:///q.tar.gz"), "memoryMiB": memory_mib}
    return make_model(name, replicas=replicas, task="generate", artifacts=[artifact])


def cpu_node(
    name: str, allocatable_mib: int, cap: ContainerCap | None = None, **kw: Any
) -> NodeState:
    """A CPU node offering placement the budget the operator gives a node reporting
    `allocatable_mib`: less the default 512 MiB reserve, no more than `cap`."""
    return make_node(
        name, accelerator="cpu", memory_mib=memory_budget(allocatable_mib, 512, cap), **kw
    )
