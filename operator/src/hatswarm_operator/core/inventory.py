"""What the control plane knows about each node: Kubernetes' view plus the agent's own probe.

Pure: `observe` folds one probe result into a node's state. Kubernetes takes 40 s to mark a
node NotReady and 300 s to evict; probing the agent every second and dropping it after
`failure_threshold` misses takes a node out of the pool in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from hatswarm_agent.protocol.v1 import control_pb2

READY = control_pb2.MODEL_STATE_READY
LOADING = control_pb2.MODEL_STATE_LOADING
FAILED = control_pb2.MODEL_STATE_FAILED
STATE_NAMES: dict[int, str] = {
    control_pb2.MODEL_STATE_UNSPECIFIED: "Unknown",
    LOADING: "Loading",
    READY: "Ready",
    FAILED: "Failed",
    control_pb2.MODEL_STATE_UNLOADING: "Unloading",
}


@dataclass(frozen=True)
class ModelObs:
    """One model version as an agent last reported it."""

    name: str
    version: str
    state: int
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
        return self.state == READY


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

    @property
    def in_pool(self) -> bool:
        return self.up and self.k8s_ready and self.schedulable

    @property
    def out_reason(self) -> str:
        if not self.k8s_ready:
            return "NodeNotReady"
        if not self.schedulable:
            return "NodeUnschedulable"
        if not self.up:
            return f"AgentUnreachable: {self.last_error}" if self.last_error else "AgentNotSeen"
        return ""

    def model(self, name: str, version: str) -> ModelObs | None:
        return next((m for m in self.models if m.name == name and m.version == version), None)


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def from_status(status: control_pb2.NodeStatusResponse) -> tuple[ModelObs, ...]:
    return tuple(
        ModelObs(
            name=m.name,
            version=m.version,
            state=m.state,
            reason=m.reason,
            sha256=m.sha256,
            queue_depth=m.queue_depth,
            request_rate=m.request_rate,
            p99_ms=m.latency.p99_ms,
            capacity_fps=m.capacity_fps,
            compute_seconds=m.compute_seconds,
            energy_joules=m.energy_joules,
            inference_count=m.inference_count,
            request_success=m.request_success,
            request_failure=m.request_failure,
            adapters=tuple(m.adapters),
            resident_adapters=tuple(m.resident_adapters),
            adapter_slots=m.adapter_slots,
            adapter_requests=tuple(sorted(m.adapter_requests.items())),
        )
        for m in status.models
    )


def observe(
    node: NodeState,
    status: control_pb2.NodeStatusResponse | None,
    now: float,
    failure_threshold: int,
    error: str = "",
) -> NodeState:
    """Fold one probe into the node: a success brings it up, `failure_threshold` misses drop it."""
    if status is None:
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
        accelerator=status.accelerator or node.accelerator,
        device_id=status.device_id,
        models=from_status(status),
        temperature_c=_num(status.temperature_c),
        watts=_num(status.watts),
    )
