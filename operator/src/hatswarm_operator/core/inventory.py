"""What the control plane knows about each node: Kubernetes' view plus the agent's own probe.

Pure: `observe` folds one probe result (a :class:`NodeReport`, converted from the agent's
NodeStatus reply by :mod:`hatswarm_operator.control.converters`) into a node's state.
Kubernetes takes 40 s to mark a node NotReady and 300 s to evict; probing the agent every
second and dropping it after `failure_threshold` misses takes a node out of the pool in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.common import ACCELERATOR_LABEL, ACCELERATORS


class ModelState(StrEnum):
    """Where a model version stands on one agent; the values are what status shows."""

    UNKNOWN = "Unknown"
    LOADING = "Loading"
    READY = "Ready"
    FAILED = "Failed"
    UNLOADING = "Unloading"


@dataclass(frozen=True)
class ModelObs:
    """One model version as an agent last reported it."""

    name: str
    version: str
    state: ModelState
    reason: str = ""
    sha256: str = ""
    queue_depth: int = 0
    request_rate: float = 0.0
    p99_ms: float = 0.0
    capacity_fps: float = 0.0
    compute_seconds: float = 0.0
    energy_joules: float = 0.0
    inference_count: int = 0
    request_success: int = 0
    request_failure: int = 0
    adapters: tuple[str, ...] = ()  # adapters it accepts (admitted)
    resident_adapters: tuple[str, ...] = ()  # loaded now, least recently used first
    adapter_slots: int = 0
    adapter_requests: tuple[tuple[str, int], ...] = ()  # per adapter since load

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY


@dataclass(frozen=True)
class NodeState:
    """A candidate node of a pool. `in_pool` is what placement and routing may use."""

    name: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    k8s_ready: bool = True
    schedulable: bool = True
    memory_mib: int = 3072
    npu_contexts: int = 4
    accelerator: str = "cpu"
    device_id: str = ""
    up: bool = False
    failures: int = 0
    last_seen: float | None = None
    last_error: str = ""
    models: tuple[ModelObs, ...] = ()
    temperature_c: float | None = None
    watts: float | None = None
    backend: str = ""
    backend_error: str = ""
    routing_generation: int = 0  # the routing table the agent last said it holds

    @property
    def in_pool(self) -> bool:
        return self.up and self.k8s_ready and self.schedulable and not self.backend_error

    @property
    def out_reason(self) -> str:
        if not self.k8s_ready:
            return "NodeNotReady"
        if not self.schedulable:
            return "NodeUnschedulable"
        if not self.up:
            return f"AgentUnreachable: {self.last_error}" if self.last_error else "AgentNotSeen"
        if self.backend_error:
            return f"BackendUnavailable: {self.backend_error}"
        return ""

    @property
    def accelerator_mismatch(self) -> str:
        """'' unless HailoRT identified another chip than the node's accelerator label says
        (the label then requested the wrong NPU resource; placement trusts the chip)."""
        label = self.labels.get(ACCELERATOR_LABEL, "")
        if self.backend != "hailo" or not label or label == self.accelerator:
            return ""
        return (
            f"node {self.name} is labelled {ACCELERATOR_LABEL}={label} but its agent's HailoRT "
            f"identified a {self.accelerator}: placing by the chip; fix the label"
        )

    def model(self, name: str, version: str) -> ModelObs | None:
        return next((m for m in self.models if m.name == name and m.version == version), None)


@dataclass(frozen=True)
class NodeReport:
    """One successful probe: what the agent said about its device and its models."""

    accelerator: str = ""
    device_id: str = ""
    models: tuple[ModelObs, ...] = ()
    temperature_c: float | None = None
    watts: float | None = None
    backend: str = ""
    backend_error: str = ""
    routing_generation: int = 0


def placement_accelerator(labels: dict[str, str], report: NodeReport) -> str:
    """The accelerator placement uses for a node: the chip its agent reports, with the node's
    `hatswarm.io/accelerator` label as the override where the agent cannot identify hardware.

    - HailoRT identified the chip (backend hailo): that chip, whatever the label says (a label
      cannot make a Hailo-8L run Hailo-8 HEFs);
    - a CPU-only agent (onnxruntime): cpu (it runs no HEF, whatever the node carries);
    - anything else (the simulated NPU, an agent that says nothing): the label when it names a
      known accelerator, else what the agent reported.
    """
    if report.backend in ("hailo", "onnxruntime"):
        return report.accelerator or "cpu"
    label = labels.get(ACCELERATOR_LABEL, "")
    if label in ACCELERATORS:
        return label
    return report.accelerator


def observe(
    node: NodeState,
    report: NodeReport | None,
    now: float,
    failure_threshold: int,
    error: str = "",
) -> NodeState:
    """Fold one probe into the node: a success brings it up, `failure_threshold` misses drop it."""
    if report is None:
        failures = node.failures + 1
        return replace(
            node,
            failures=failures,
            up=node.up and failures < failure_threshold,
            last_error=error or "probe failed",
        )
    return replace(
        node,
        up=True,
        failures=0,
        last_seen=now,
        last_error="",
        accelerator=placement_accelerator(node.labels, report) or node.accelerator,
        device_id=report.device_id,
        models=report.models,
        temperature_c=report.temperature_c,
        watts=report.watts,
        backend=report.backend,
        backend_error=report.backend_error,
        routing_generation=report.routing_generation,
    )


def is_verification_failure(reason: str) -> bool:
    """Did a load fail because the artifact is not the one the spec names (or unsigned)?"""
    return "sha256" in reason or "signature" in reason or "digest" in reason


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Do `labels` match every key of a node selector?"""
    return all(labels.get(k) == v for k, v in selector.items())


def pool_members(pool: InferencePool, nodes: Sequence[NodeState]) -> list[NodeState]:
    """Nodes whose labels match the pool, whose agent answers and that Kubernetes schedules."""
    return [
        n
        for n in nodes
        if n.in_pool
        and selects(pool.spec.node_selector, n.labels)
        and n.accelerator in pool.spec.accelerators
    ]
