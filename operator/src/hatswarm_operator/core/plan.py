"""What one reconcile of a pool decides, as plain data: the output of `reconcile.plan_pool`.

The control runtime acts on it (loads, unloads, the routing table every agent gets) and
publishes the rest (statuses, Events). Nothing here knows gRPC: the runtime's converters turn
loads and routes into protobuf messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hatswarm_operator.api.common import SecretKeyRef
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus
from hatswarm_operator.core import placement as pl
from hatswarm_operator.core.inventory import ModelObs, NodeState
from hatswarm_operator.core.rolloutplan import GateRequest, RolloutMemory


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter artifact sent with a load."""

    name: str
    uri: str
    sha256: str


# The agent backend that loads a generative or embedding build (hatswarm_agent.backends
# names); a tensor model loads on the agent's default backend (auto: HailoRT or onnxruntime).
TASK_BACKENDS: dict[tuple[str, str], str] = {
    ("generate", "hailo10h"): "hailo-genai",
    ("generate", "cpu"): "onnxruntime-genai",
    ("embed", "cpu"): "embedding",
}


GGUF_BACKEND = "llamacpp"
"""llama.cpp loads a GGUF build whatever the task (the API admits gguf for generate/embed)."""


def backend_for(task: str, accelerator: str, fmt: str = "") -> str:
    """The backend a LoadModel names for a `task` build on `accelerator` in format `fmt`
    ('' = the agent's default, for tensor models)."""
    if fmt == "gguf":
        return GGUF_BACKEND
    return TASK_BACKENDS.get((task, accelerator), "")


def load_options(task: str, fmt: str) -> tuple[tuple[str, str], ...]:
    """Backend options a build needs to load as what its task says (a GGUF embedding model
    runs llama.cpp in embedding mode)."""
    return (("embedding", "true"),) if task == "embed" and fmt == "gguf" else ()


@dataclass(frozen=True)
class ReplicaLoad:
    """Load one replica of ``model@version`` on a node (a LoadModel call)."""

    node: str
    address: str
    model: str
    version: str
    artifact: pl.Artifact
    cache_ttl_seconds: int = 0
    signature: str = ""
    public_key_ref: SecretKeyRef | None = None
    """The Secret key holding the key that checks ``signature`` (a signed artifact only)."""
    adapters: tuple[AdapterRef, ...] = ()
    adapters_only: bool = False
    """The base is loaded already: only its adapter set changes."""
    backend: str = ""
    """The agent backend to load it on (generative and embedding builds); '' = the default."""
    options: tuple[tuple[str, str], ...] = ()
    """Backend options the build needs (LoadModel `options`)."""


@dataclass(frozen=True)
class ReplicaUnload:
    """Unload one replica of ``model@version`` from a node."""

    node: str
    address: str
    model: str
    version: str


@dataclass(frozen=True)
class Endpoint:
    """One replica a route sends traffic to."""

    node: str
    address: str
    weight: float
    adapters: tuple[str, ...] = ()
    """Adapters loaded there now (for adapter-affinity routing)."""
    adapter_slots_free: int = 0
    adapters_known: tuple[str, ...] = ()
    """Adapters it can serve, loaded or not."""


def endpoint_for(node: NodeState, obs: ModelObs, weight: float) -> Endpoint:
    """A route endpoint with the adapters the node reported for this model version."""
    return Endpoint(
        node.name,
        node.address,
        weight,
        adapters=obs.resident_adapters,
        adapter_slots_free=max(0, obs.adapter_slots - len(obs.resident_adapters))
        if obs.adapters
        else 0,
        adapters_known=obs.adapters,
    )


@dataclass(frozen=True)
class Route:
    """Where the pool's agents send requests for one model version."""

    model: str
    version: str
    endpoints: tuple[Endpoint, ...]
    cache_ttl_seconds: int = 0
    cloud_fallback: bool = False
    weight: float = 0.0
    """The version's share of the model's traffic (percent; relative across its routes)."""
    escalation_output: str = ""
    escalation_threshold: float = 0.0
    escalation_model: str = ""
    escalation_cloud: bool = False
    # Generations (EdgeModel cloudFallback): the cloud's model name and what escalates.
    cloud_model: str = ""
    escalate_long_prompts: bool = False
    escalation_min_mean_logprob: float = 0.0
    escalation_logprob_tokens: int = 0


@dataclass(frozen=True)
class ResourceEvent:
    """A Kubernetes Event about an EdgeModel or an InferencePool (the terminal in local mode)."""

    kind: Literal["EdgeModel", "InferencePool"]
    name: str
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class PoolPlan:
    placement: pl.Placement
    loads: list[ReplicaLoad] = field(default_factory=list)
    unloads: list[ReplicaUnload] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    model_status: dict[str, EdgeModelStatus] = field(default_factory=dict)
    pool_status: InferencePoolStatus = field(default_factory=InferencePoolStatus)
    events: list[ResourceEvent] = field(default_factory=list)
    """Events about a lasting state (posted when their message changes)."""
    rollout_events: list[ResourceEvent] = field(default_factory=list)
    """Rollout transitions (posted every time: each happens once)."""
    transitions: list[ResourceEvent] = field(default_factory=list)
    """Condition flips judged against the loop's memory (`slo`): posted every time, each
    happens once, even when a flip's message repeats an earlier one's."""
    slo: dict[str, bool] = field(default_factory=dict)
    """Each model's last SLO verdict after this reconcile (True met, False missed; models with
    a TTFT target and a verdict so far): the next reconcile judges flips against it."""
    rollouts: dict[str, RolloutMemory] = field(default_factory=dict)
    """Each model's rollout state after this reconcile (the next one starts from it)."""
    gates: list[GateRequest] = field(default_factory=list)
    """Validation gates that can run now (their version is ready on a member)."""
