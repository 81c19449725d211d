"""What the control plane knows about each node: Kubernetes' view plus the agent's own probe.

Pure: `observe` folds one probe result (a :class:`NodeReport`, converted from the agent's
NodeStatus reply by :mod:`hatswarm_operator.control.converters`) into a node's state.
Kubernetes takes 40 s to mark a node NotReady and 300 s to evict; probing the agent every
second and dropping it after `failure_threshold` misses takes a node out of the pool in seconds.
An agent followed over its status stream is not probed while the stream lives; a stream that
breaks makes the node a suspect (`suspect`), and one failed probe then takes it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.common import ACCELERATOR_LABEL, ACCELERATORS
from hatswarm_operator.api.inferencepool import memory_limit_mib

DEFAULT_NODE_MEMORY_MIB = 3072
"""What a node offers the pool when nothing says how much memory it has (a Node without
status.allocatable.memory, a local node without memoryMiB): the budget before nodes reported it."""


@dataclass(frozen=True)
class ContainerCap:
    """The most placement may fill on any node of a pool on a cluster: the agent container's
    memory limit less what the agent itself takes there. Every model a node holds runs in that
    container (onnxruntime sessions in the agent, a generative runtime in its child process,
    same cgroup), so past the limit the kernel kills the agent, whatever the node has free."""

    limit: str
    """spec.agent.resources.limits.memory as written (e.g. 1Gi)."""
    limit_mib: int
    baseline_mib: int
    """spec.placement.agentMemoryBaselineMiB."""

    @property
    def budget_mib(self) -> int:
        return max(0, self.limit_mib - self.baseline_mib)

    def __str__(self) -> str:
        return (
            f"each node offers at most {self.budget_mib} MiB: the agent container's memory limit "
            f"{self.limit} (spec.agent.resources.limits.memory) less {self.baseline_mib} MiB for "
            "the agent itself (spec.placement.agentMemoryBaselineMiB)"
        )


def container_cap(pool: InferencePool) -> ContainerCap | None:
    """The pool's :class:`ContainerCap`; None when its agents run without a memory limit."""
    limit = memory_limit_mib(pool.spec.agent.resources)
    if limit is None:
        return None
    return ContainerCap(limit[0], limit[1], pool.spec.placement.agent_memory_baseline_mi_b)


def memory_budget(
    allocatable_mib: int | None, reserve_mib: int, cap: ContainerCap | None = None
) -> int:
    """The memory placement may fill on a node, in MiB: what the node can allocate to pods
    less the pool's reserve for the agent and everything else the node runs (never below 0),
    and no more than the agent container may hold (`cap`, when its agents have a limit).

    None (the node does not say) keeps :data:`DEFAULT_NODE_MEMORY_MIB`, reserve not taken
    off: a default is a budget already, and an unreporting node places as it always did (the
    container's cap still holds: it is known whatever the node reports).
    """
    budget = DEFAULT_NODE_MEMORY_MIB if allocatable_mib is None else allocatable_mib - reserve_mib
    return max(0, budget if cap is None else min(budget, cap.budget_mib))


class ModelState(StrEnum):
    """Where a model version stands on one agent; the values are what status shows."""

    UNKNOWN = "Unknown"
    LOADING = "Loading"
    READY = "Ready"
    FAILED = "Failed"
    UNLOADING = "Unloading"


@dataclass(frozen=True)
class GenerationObs:
    """A generative model's load in tokens as its agent last reported it."""

    active_sequences: int = 0
    queued_sequences: int = 0
    max_sequences: int = 0
    queued_prompt_tokens: int = 0
    kv_cache_tokens_used: int = 0
    kv_cache_tokens_budget: int = 0
    tokens_per_second: float = 0.0
    ttft_p50_ms: float = 0.0
    ttft_p99_ms: float = 0.0
    prefix_hit_tokens: int = 0
    prompt_tokens: int = 0


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
    generation: GenerationObs | None = None  # generative models only

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
    memory_mib: int = DEFAULT_NODE_MEMORY_MIB  # what placement may fill (memory_budget)
    memory_cap: str = ""  # the ContainerCap, when it (not the node) set memory_mib
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
    # Cloud fallback answers per model since the agent started (cumulative, from NodeStatus).
    cloud_requests: tuple[tuple[str, int], ...] = ()
    # Cumulative tokens since the agent started: ((model, kind, where), tokens), sorted.
    tokens: tuple[tuple[tuple[str, str, str], int], ...] = ()

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
    cloud_requests: tuple[tuple[str, int], ...] = ()
    tokens: tuple[tuple[tuple[str, str, str], int], ...] = ()


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
        cloud_requests=report.cloud_requests,
        tokens=report.tokens,
    )


def suspect(node: NodeState, failure_threshold: int) -> NodeState:
    """The node's status stream broke (keepalive unanswered, connection refused or reset, or
    silent past its heartbeats): it counts as `failure_threshold - 1` misses, so the one probe
    that confirms decides. An answer brings it back at once; a miss takes it out (not before:
    a blip that the probe outlives costs nothing)."""
    if not node.up:
        return node
    return replace(node, failures=max(node.failures, failure_threshold - 1))


def agrees(node: NodeState, model: str, version: str, state: ModelState | None) -> bool:
    """Does the node's report already show what the control loop did (loaded: the version is
    there, in whatever state; unloaded: it is gone)?"""
    there = node.model(model, version) is not None
    return there if state is not None else not there


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
