"""InferencePool: a set of Pi + HAT+ nodes, the agents on them, routing and the cost inputs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from hatswarm_agent.protocol.defaults import ROUTE_QUEUE_LIMIT, ROUTE_RETRIES, ROUTE_TIMEOUT_MS
from pydantic import Field, field_validator, model_validator

from hatswarm_operator.api.common import (
    ACCELERATORS,
    API_VERSION,
    CONDITIONS_LIST,
    DNS_1035_LABEL,
    STATUS_CONFIG,
    Accelerator,
    ApiModel,
    Condition,
    DnsLabel,
    LabelMap,
    ObjectMeta,
    SecretRef,
    Time,
    TokenSecretRef,
    cel,
    with_rules,
)


class PoolMeta(ObjectMeta):
    """Object metadata; an InferencePool's name is a DNS-1035 label: its Service has it."""

    name: Annotated[str, Field(max_length=63, pattern=DNS_1035_LABEL)] = ""
    """The pool's name (a lowercase letter first, then letters, digits and '-'; at most 63)."""


QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
RESOURCE_NAME = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
AgentBackend = Literal["auto", "hailo", "simulated", "onnxruntime"]

_MEMORY_QUANTITY = re.compile(
    r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?"
)
_SUFFIX: dict[str, Decimal | int] = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
           "Pi": 2**50, "Ei": 2**60}  # fmt: skip


def memory_limit_mib(resources: Mapping[str, Any]) -> tuple[str, int] | None:
    """The memory limit of a corev1.ResourceRequirements (`limits.memory`), as written and in
    whole MiB (rounded down); None without one. ValueError names a limit that is no quantity
    (the API server would refuse the DaemonSet; better the pool says so itself)."""
    limits = resources.get("limits")
    if not isinstance(limits, Mapping) or limits.get("memory") is None:
        return None
    raw = limits["memory"]
    m = _MEMORY_QUANTITY.fullmatch(str(raw)) if isinstance(raw, str | int) else None
    if m is None or isinstance(raw, bool):
        raise ValueError(f"agent.resources.limits.memory: not a Kubernetes quantity: {raw!r}")
    value = Decimal(m.group(1)) * Decimal(10) ** int(m.group(2) or 0) * _SUFFIX[m.group(3) or ""]
    return str(raw), int(value // (1024 * 1024))


class ChipResources(ApiModel):
    """Extended resource names per Hailo chip, where a device plugin exposes one per chip."""

    hailo8l: Annotated[str, Field(max_length=253, pattern=RESOURCE_NAME)] | None = Field(
        default=None, alias="hailo8l", description="Extended resource of Hailo-8L nodes"
    )
    hailo8: Annotated[str, Field(max_length=253, pattern=RESOURCE_NAME)] | None = Field(
        default=None, alias="hailo8", description="Extended resource of Hailo-8 nodes"
    )
    hailo10h: Annotated[str, Field(max_length=253, pattern=RESOURCE_NAME)] | None = Field(
        default=None, alias="hailo10h", description="Extended resource of Hailo-10H nodes"
    )


class ChipImages(ApiModel):
    """Agent images per Hailo chip: HailoRT 4.x (Hailo-8L, Hailo-8) and 5.x (Hailo-10H) are
    different packages that cannot share one image (images/README.md, agent-hailo)."""

    hailo8l: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None, alias="hailo8l", description="Agent image for Hailo-8L nodes"
    )
    hailo8: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None, alias="hailo8", description="Agent image for Hailo-8 nodes"
    )
    hailo10h: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None, alias="hailo10h", description="Agent image for Hailo-10H nodes"
    )


class NpuAccess(ApiModel):
    """How the Hailo NPU reaches the agents of chip-labelled nodes (CPU nodes request nothing)."""

    # Only the agents on nodes labelled with a Hailo chip (`hatswarm.io/accelerator`) request
    # the resource; the agents of the other nodes run on the CPU and request nothing.

    model_config = with_rules(
        cel(
            "!has(self.hostDevice) || !self.hostDevice || has(self.deviceFile)",
            "hostDevice needs deviceFile",
        )
    )

    resource_name: Annotated[str, Field(max_length=253, pattern=RESOURCE_NAME)] | None = Field(
        default="squat.ai/hailo",
        description="Extended resource a device plugin exposes for the Hailo chip "
        "(the chart's optional generic-device-plugin: squat.ai/hailo)",
    )
    resource_names: ChipResources = Field(
        default_factory=ChipResources,
        description="Per-chip resource names (e.g. {hailo8: vendor.example/hailo8}); each "
        "overrides resourceName for that chip",
    )
    device_file: Annotated[str, Field(pattern=r"^/dev/[-a-z0-9_/]+$")] | None = None
    """Device node of the NPU, e.g. /dev/hailo0 (with hostDevice)."""
    host_device: bool = Field(
        default=False,
        description="Mount deviceFile by hostPath in a privileged container (off by default)",
    )

    def resource_for(self, accelerator: str) -> str | None:
        """The extended resource an agent on a node of this chip requests (None: none)."""
        chip: str | None = getattr(self.resource_names, accelerator, None)
        return chip or self.resource_name


class LocalObjectReference(ApiModel):
    """corev1.LocalObjectReference: an object of the same namespace, by name."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    """Name of the object (here: an image pull Secret)."""


class AgentSettings(ApiModel):
    """The node-agent DaemonSets the operator runs on the pool's nodes (one per chip class)."""

    model_config = with_rules(
        cel(
            "!has(self.fileRoots) || self.fileRoots.all(r, !r.contains('..'))",
            "agent.fileRoots must not contain '..'",
        )
    )

    # Nothing here is version-bearing in the CRD: `image` has no schema default, so the API
    # server stores none and the operator fills it at reconcile time (the chart's agentDefaults,
    # else the agent image of the operator's own version): an operator upgrade upgrades agents.

    image: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None,
        description="Default: the operator's agent image (chart value agentDefaults.image, "
        "else ghcr.io/hatswarm/agent:<operator version>)",
    )
    images: ChipImages = Field(
        default_factory=ChipImages,
        description="Per-chip images (e.g. {hailo10h: .../agent-hailo:0.1.0-hailort5}) for "
        "the agents of that chip's nodes; the others run `image`",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Always, IfNotPresent or Never."""
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=16)] = Field(
        default_factory=list, description="Secrets to pull the agent image from a private registry"
    )
    resources: dict[str, Any] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "500m", "memory": "512Mi"},  # the chart's agentDefaults
            "limits": {"cpu": "3", "memory": "2Gi"},
        },
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="corev1.ResourceRequirements for the agent container. Its limits.memory "
        "also caps what placement fills on each node (spec.placement.agentMemoryBaselineMiB)",
    )
    npu: NpuAccess = Field(default_factory=NpuAccess)
    cache_size: Annotated[str, Field(pattern=QUANTITY)] = "2Gi"
    """Disk the agent may use for verified artifacts (a Kubernetes quantity, e.g. 2Gi)."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8001
    """gRPC port of the agent: Open Inference Protocol, control and health."""
    metrics_port: Annotated[int, Field(ge=1, le=65535)] = 9090
    """Port of the agent's Prometheus /metrics."""
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """HTTP port of the agent (the pool Service's `http` port): OpenAI-compatible /v1 (chat,
    completions, embeddings), Ollama /api and KServe v2 REST /v2, with the same bearer tokens as
    gRPC. 8000/8001 are Triton's HTTP/gRPC ports."""
    backend: AgentBackend = Field(
        default="auto",
        description="auto: HailoRT when it imports and a device opens, else onnxruntime on the "
        "CPU; hailo: the NPU or nothing (a node without it reports BackendUnavailable); "
        "simulated: a paced NPU stand-in (kind, laptops); onnxruntime: CPU only",
    )
    tolerations: Annotated[list[dict[str, Any]], Field(max_length=32)] = Field(
        default_factory=list,
        json_schema_extra={
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        },
        description="corev1.Toleration list for the agent pods (tainted Pi nodes)",
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="corev1.Affinity; the operator adds the chip-class node requirement to it",
    )
    priority_class_name: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)] | None = None
    """PriorityClass of the agent pods (e.g. one that outranks batch work on the node)."""
    service_account_name: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)] | None = (
        Field(default=None, description="Default: the namespace's default ServiceAccount")
    )
    pod_labels: LabelMap = Field(
        default_factory=dict,
        description="Extra labels on the agent pods (the operator's own labels win)",
    )
    pod_annotations: LabelMap = Field(default_factory=dict, description="Extra pod annotations")
    file_roots: Annotated[
        list[Annotated[str, Field(pattern=r"^/([-A-Za-z0-9_.]+/?)*$", max_length=256)]],
        Field(max_length=16),
    ] = Field(
        default_factory=list,
        description="Host folders whose files EdgeModels may load by file:// (mounted "
        "read-only by hostPath: needs a namespace that allows hostPath). Empty: artifacts "
        "come only over http(s)",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @model_validator(mode="after")
    def _roots(self) -> Self:
        if any(".." in r for r in self.file_roots):
            raise ValueError("agent.fileRoots must not contain '..'")
        return self

    @field_validator("resources")
    @classmethod
    def _memory_limit(cls, resources: dict[str, Any]) -> dict[str, Any]:
        memory_limit_mib(resources)
        return resources


class Routing(ApiModel):
    """How every agent routes a request: to itself, a peer replica, or the cloud."""

    policy: Literal["LeastLoaded", "PowerOfTwoChoices", "RoundRobin"] = "PowerOfTwoChoices"
    """How an agent picks a replica: PowerOfTwoChoices, LeastLoaded or RoundRobin."""
    queue_limit: Annotated[int, Field(ge=1, le=100000)] = ROUTE_QUEUE_LIMIT
    """Requests an agent queues per model before it refuses more."""
    retries: Annotated[int, Field(ge=0, le=10)] = ROUTE_RETRIES
    """Other replicas tried when one fails."""
    timeout_ms: Annotated[int, Field(ge=1, le=600000)] = ROUTE_TIMEOUT_MS
    """Budget of one request across its attempts, in ms."""
    hedge_after_percentile: Annotated[float, Field(ge=50, le=100)] | None = None
    """Send a second copy to another replica when the first is slower than this latency percentile (50..100); unset: no hedging."""


class FailureDetection(ApiModel):
    """Probing of the agents: a node that misses failureThreshold probes leaves the pool."""

    probe_interval_seconds: Annotated[float, Field(ge=0.1, le=300)] = 1.0
    """Seconds between the operator's probes of each agent."""
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    """Missed probes after which a node is out of the pool."""


class OpenAiCloud(ApiModel):
    """An OpenAI-compatible HTTP API for generations (chat and completion prompts)."""

    base_url: Annotated[
        str, Field(min_length=8, max_length=512, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    ]
    """Base URL of the API, up to and including /v1 (e.g. https://api.openai.com/v1)."""
    model: Annotated[str, Field(min_length=1, max_length=256)]
    """The cloud's model name generations use (an EdgeModel's cloudFallback.cloudModel overrides it)."""
    price_per1m_input_usd: Annotated[float, Field(ge=0, le=1e6, alias="pricePer1MInputUsd")] = 0.0
    """What the cloud charges per 1M input (prompt) tokens in USD."""
    price_per1m_output_usd: Annotated[float, Field(ge=0, le=1e6, alias="pricePer1MOutputUsd")] = 0.0
    """What the cloud charges per 1M output (completion) tokens in USD."""


class CloudFallback(ApiModel):
    """The cloud the pool falls back on (hybrid pattern): an OIP gRPC endpoint for tensor
    models, an OpenAI-compatible API for generations, or both."""

    model_config = with_rules(
        cel(
            "has(self.endpoint) || has(self.openai)",
            "cloudFallback needs an endpoint (OIP gRPC), openai (generations) or both",
        )
    )

    endpoint: Annotated[str, Field(pattern=r"^[-A-Za-z0-9.]+:[0-9]{1,5}$")] | None = Field(
        default=None, description="host:port of an OIP gRPC endpoint"
    )
    openai: OpenAiCloud | None = None
    """An OpenAI-compatible API that generations go to (same token and share cap)."""
    token_secret_ref: TokenSecretRef | None = None
    """Secret key with the bearer token for the cloud endpoint."""
    tls: bool = True
    """Use TLS toward the cloud endpoint."""
    max_share: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Largest share of traffic (0..1) that may go to the cloud."""
    price_per1k_usd: Annotated[float, Field(ge=0, alias="pricePer1kUsd")] = 0.0
    """What the cloud charges per 1,000 inferences in USD (for cost reports)."""

    @model_validator(mode="after")
    def _some_cloud(self) -> Self:
        if self.endpoint is None and self.openai is None:
            raise ValueError(
                "cloudFallback needs an endpoint (OIP gRPC), openai (generations) or both"
            )
        return self


class CacheLimits(ApiModel):
    """Limits of each agent's response cache."""

    max_entries: Annotated[int, Field(ge=0, le=10_000_000)] = 10000
    """Responses each agent's cache keeps at most."""
    max_bytes: Annotated[str, Field(pattern=QUANTITY)] = "64Mi"
    """Memory each agent's cache uses at most (a Kubernetes quantity, e.g. 64Mi)."""


class Auth(ApiModel):
    """Who may call the pool's agents, and whose artifacts they load.

    Control (load, unload, routing, node status) takes only the operator's own token: a
    Secret `hatswarm-control-<pool>` the operator generates and mounts into the agents alone
    (delete it to rotate). Inference takes the tokens of `tokenSecretRef` (one a line); without
    one the operator generates `hatswarm-clients-<pool>` (key `token`) for clients, unless
    `unauthenticatedInference` says the pool serves anyone.
    """

    model_config = with_rules(
        cel(
            "!has(self.unauthenticatedInference) || !self.unauthenticatedInference"
            " || !has(self.tokenSecretRef)",
            "auth.unauthenticatedInference and auth.tokenSecretRef exclude each other",
        ),
        cel(
            "!has(self.requireSignatures) || !self.requireSignatures"
            " || has(self.trustedKeysSecret)",
            "auth.requireSignatures needs auth.trustedKeysSecret",
        ),
    )

    token_secret_ref: TokenSecretRef | None = Field(
        default=None,
        description="Inference tokens clients present (one a line in the key). Default: a "
        "generated Secret hatswarm-clients-<pool>",
    )
    unauthenticated_inference: bool = Field(
        default=False,
        description="Serve inference to callers without a token (control still needs the "
        "operator's identity)",
    )
    tls_secret_ref: SecretRef | None = Field(
        default=None, description="kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt for mTLS)"
    )
    mutual_tls: bool = False
    """Agents also require client certificates signed by the Secret's ca.crt."""
    trusted_keys_secret: DnsLabel | None = Field(
        default=None,
        description="Secret whose every key is an ed25519 public key artifact signatures may "
        "be made with (the agents trust no key a request brings)",
    )
    require_signatures: bool = Field(
        default=False, description="Refuse artifacts not signed by a trusted key"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.unauthenticated_inference and self.token_secret_ref is not None:
            raise ValueError(
                "auth.unauthenticatedInference and auth.tokenSecretRef exclude each other"
            )
        if self.require_signatures and self.trusted_keys_secret is None:
            raise ValueError("auth.requireSignatures needs auth.trustedKeysSecret")
        return self


class DeviceCost(ApiModel):
    """The seed article's TCO inputs, per device unless said otherwise."""

    device_price_usd: Annotated[float, Field(ge=0)] = 75.0
    """Price of one Raspberry Pi 5 in USD."""
    hat_price_usd: Annotated[float, Field(ge=0)] = 130.0
    """Price of one AI HAT+ in USD."""
    lifespan_years: Annotated[float, Field(ge=0.1, le=50)] = 3.0
    """Years over which the hardware is written off."""
    watts: Annotated[float, Field(ge=0, le=1000)] = 10.0
    """Average power draw of one device in W."""
    electricity_usd_per_kwh: Annotated[float, Field(ge=0)] = 0.12
    """Electricity price in USD per kWh."""
    mgmt_usd_per_device_year: Annotated[float, Field(ge=0)] = 60.0
    """Management cost per device and year in USD."""
    connectivity_usd_per_device_year: Annotated[float, Field(ge=0)] = 0.0
    """Network cost per device and year in USD."""
    shared_ops_usd_per_year: Annotated[float, Field(ge=0)] = 0.0
    """Operations cost shared by the whole pool per year in USD."""


DEFAULT_NODE_MEMORY_RESERVE_MIB = 512
DEFAULT_AGENT_MEMORY_BASELINE_MIB = 256
"""What the agent takes of its own container before any model: an idle agent measured ~105 MiB
resident (Python, grpc, aiohttp, onnxruntime imported), the response cache may hold 64 MiB
(spec.cache.maxBytes' default), and the rest is room for request buffers and an artifact being
verified. Not the node reserve: that one covers the OS and kubelet too, outside the container."""


class PoolPlacement(ApiModel):
    """How much of each node placement may fill with the pool's models."""

    node_memory_reserve_mi_b: Annotated[
        int, Field(ge=0, le=1048576, alias="nodeMemoryReserveMiB")
    ] = DEFAULT_NODE_MEMORY_RESERVE_MIB
    """Memory kept back on every node, in MiB, for the agent itself and whatever else the node
    runs: placement fills a node's allocatable memory (Node status.allocatable.memory) minus
    this. A node that reports no allocatable memory offers 3072 MiB."""
    agent_memory_baseline_mi_b: Annotated[
        int, Field(ge=0, le=1048576, alias="agentMemoryBaselineMiB")
    ] = DEFAULT_AGENT_MEMORY_BASELINE_MIB
    """Memory the agent itself takes inside its container, in MiB. The models run in the agent
    container, so when spec.agent.resources.limits.memory is set, no node offers placement more
    than that limit less this (on a cluster; local nodes run no container)."""


class InferencePoolSpec(ApiModel):
    model_config = with_rules(
        cel(
            "!has(self.auth) || !has(self.auth.mutualTls) || !self.auth.mutualTls"
            " || has(self.auth.tlsSecretRef)",
            "auth.mutualTls needs auth.tlsSecretRef",
        )
    )

    node_selector: LabelMap = Field(
        default_factory=dict, description="Nodes whose labels match run this pool's agents"
    )
    accelerators: Annotated[list[Accelerator], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: list(ACCELERATORS),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Accelerator kinds the pool uses: hailo8l, hailo8, cpu."""
    agent: AgentSettings = Field(default_factory=AgentSettings)
    routing: Routing = Field(default_factory=Routing)
    failure_detection: FailureDetection = Field(default_factory=FailureDetection)
    cloud_fallback: CloudFallback | None = None
    cache: CacheLimits = Field(default_factory=CacheLimits)
    auth: Auth = Field(default_factory=Auth)
    cost: DeviceCost = Field(default_factory=DeviceCost)
    max_concurrent_loads_per_node: Annotated[int, Field(ge=1, le=16)] = 1
    """Model loads one node performs at once."""
    placement: PoolPlacement = Field(default_factory=PoolPlacement)
    """How much of each node's memory the pool's models may take."""

    @model_validator(mode="after")
    def _mtls(self) -> Self:
        if self.auth.mutual_tls and self.auth.tls_secret_ref is None:
            raise ValueError("auth.mutualTls is true but auth.tlsSecretRef is not set")
        return self


class PoolNode(ApiModel):
    name: str
    """Node name."""
    accelerator: str = "cpu"
    """Accelerator the node has."""
    ready: bool = False
    """Whether the node's agent answers probes."""
    address: str | None = None
    """host:port of the node's agent."""
    models: list[str] = Field(default_factory=list)
    """Model versions loaded on the node."""
    queue_depth: int = 0
    """Requests waiting on the node."""
    memory_mi_b: int | None = None
    """Memory the pool may place models into on this node, in MiB (allocatable minus
    spec.placement.nodeMemoryReserveMiB, at most the agent container's memory limit minus
    spec.placement.agentMemoryBaselineMiB)."""
    memory_used_mi_b: int | None = None
    """Memory the replicas placed on this node declare, in MiB."""
    active_sequences: int | None = None
    """Sequences its generative models are generating now (absent without one)."""
    tokens_per_second: float | None = None
    """Tokens its generative models generate per second, recent window (absent without one)."""
    temperature_c: float | None = None
    """NPU temperature in degrees Celsius, when the device reports it."""
    watts: float | None = None
    """Power draw in W, when the device reports it."""
    last_seen: Time | None = None
    """When the node last answered a probe (RFC 3339)."""
    reason: str | None = None
    """Why the node is not ready."""
    cloud_requests: int = 0
    """Requests the cloud fallback answered for this node since its agent started."""


class PoolCapacity(ApiModel):
    nodes_by_accelerator: dict[str, int] = Field(default_factory=dict)
    """Ready nodes per accelerator kind."""
    model_slots_free: int = 0
    """Replicas the pool could still place."""
    inferences_per_second: float = 0.0
    """Throughput the placed replicas sustain together."""


class PoolCost(ApiModel):
    per_device_year_usd: float | None = None
    """Cost of one device per year in USD."""
    fleet_per_year_usd: float | None = None
    """Cost of the whole pool per year in USD."""
    measured_per_inference_usd: float | None = None
    """Cost per inference at the measured volume in USD."""
    per1k_usd: float | None = Field(default=None, alias="per1kUsd")
    """Cost per 1,000 inferences at the measured volume in USD."""
    cloud_per1k_usd: float | None = Field(default=None, alias="cloudPer1kUsd")
    """The cloud fallback's price per 1,000 inferences in USD."""
    cloud_break_even_per_device_day: float | None = None
    """Inferences per device and day at which the pool costs what the cloud would."""
    cloud_fallback_spend_usd: float | None = None
    """Spent on the cloud fallback so far in USD (requests and tokens)."""
    cloud_per1m_input_usd: float | None = Field(default=None, alias="cloudPer1MInputUsd")
    """The cloud's price per 1M input (prompt) tokens in USD."""
    cloud_per1m_output_usd: float | None = Field(default=None, alias="cloudPer1MOutputUsd")
    """The cloud's price per 1M output (completion) tokens in USD."""
    edge_tokens: int | None = None
    """Tokens (prompt + completion) the pool's nodes processed since the operator started."""
    cloud_tokens: int | None = None
    """Tokens (prompt + completion) sent to the cloud since the operator started."""
    edge_per1m_tokens_usd: float | None = Field(default=None, alias="edgePer1MTokensUsd")
    """Edge spend of the generative models per 1M of their tokens, at the measured volume."""
    cloud_token_spend_usd: float | None = None
    """Spent on cloud tokens so far in USD (part of cloudFallbackSpendUsd)."""
    energy_source: Literal["measured", "nameplate"] | None = None
    """Whether energy is measured from the devices or taken from spec.cost.watts (nameplate)."""


class InferencePoolStatus(ApiModel):
    model_config = STATUS_CONFIG

    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    nodes_ready: int = 0
    """Nodes whose agent answers probes."""
    nodes_total: int = 0
    """Nodes matching spec.nodeSelector."""
    models: int = 0
    """EdgeModels in the pool."""
    nodes: list[PoolNode] = Field(default_factory=list)
    """Each node: readiness, models, load and device readings."""
    capacity: PoolCapacity = Field(default_factory=PoolCapacity)
    """What the pool can still take."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    """Ready, Degraded, ... (kubectl wait --for=condition=Ready)."""
    cost: PoolCost = Field(default_factory=PoolCost)
    """Cost per device, per year and per inference."""
    service: str | None = None
    """Service clients connect to (the pool's entry point)."""


class InferencePool(ApiModel):
    """A pool of Pi + AI HAT+ nodes serving EdgeModels as one endpoint."""

    api_version: Literal["hatswarm.io/v1alpha1"] = API_VERSION
    """hatswarm.io/v1alpha1"""
    kind: Literal["InferencePool"] = "InferencePool"
    """InferencePool"""
    metadata: PoolMeta = Field(default_factory=PoolMeta)
    """Standard object metadata; the name is a DNS-1035 label (at most 63 characters): the pool's Service has it."""
    spec: InferencePoolSpec = Field(default_factory=InferencePoolSpec)
    """Nodes, agents, routing, security and cost inputs."""
    status: InferencePoolStatus | None = None
    """What the operator observed (written by the operator)."""
