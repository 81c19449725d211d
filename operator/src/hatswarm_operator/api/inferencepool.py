"""InferencePool: a set of Pi + HAT+ nodes, the agents on them, routing and the cost inputs."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from hatswarm_agent.protocol.defaults import ROUTE_QUEUE_LIMIT, ROUTE_RETRIES, ROUTE_TIMEOUT_MS
from pydantic import Field, model_validator

from hatswarm_operator.api.common import (
    ACCELERATORS,
    API_VERSION,
    STATUS_CONFIG,
    Accelerator,
    ApiModel,
    Condition,
    LabelMap,
    ObjectMeta,
    SecretKeyRef,
    cel,
    with_rules,
)

QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"


class NpuAccess(ApiModel):
    """How the Hailo NPU reaches the agent: a device-plugin resource, or (opt-in) the file."""

    model_config = with_rules(
        cel(
            "!has(self.hostDevice) || !self.hostDevice || has(self.deviceFile)",
            "hostDevice needs deviceFile",
        )
    )

    resource_name: Annotated[str, Field(max_length=253)] | None = Field(
        default="hailo.ai/h8l", description="Extended resource a Hailo device plugin exposes"
    )
    device_file: Annotated[str, Field(pattern=r"^/dev/[-a-z0-9_/]+$")] | None = None
    host_device: bool = Field(
        default=False,
        description="Mount deviceFile by hostPath in a privileged container (off by default)",
    )


class AgentSettings(ApiModel):
    """The node-agent DaemonSet the operator runs on the pool's nodes."""

    image: Annotated[str, Field(min_length=1, max_length=512)] = "ghcr.io/hatswarm/agent:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: dict[str, Any] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="corev1.ResourceRequirements for the agent container",
    )
    npu: NpuAccess = Field(default_factory=NpuAccess)
    cache_size: Annotated[str, Field(pattern=QUANTITY)] = "2Gi"
    port: Annotated[int, Field(ge=1, le=65535)] = 8001
    metrics_port: Annotated[int, Field(ge=1, le=65535)] = 9090
    backend: Literal["hailo", "simulated", "onnxruntime"] = "hailo"


class Routing(ApiModel):
    policy: Literal["LeastLoaded", "PowerOfTwoChoices", "RoundRobin"] = "PowerOfTwoChoices"
    queue_limit: Annotated[int, Field(ge=1, le=100000)] = ROUTE_QUEUE_LIMIT
    retries: Annotated[int, Field(ge=0, le=10)] = ROUTE_RETRIES
    timeout_ms: Annotated[int, Field(ge=1, le=600000)] = ROUTE_TIMEOUT_MS
    hedge_after_percentile: Annotated[float, Field(ge=50, le=100)] | None = None


class FailureDetection(ApiModel):
    probe_interval_seconds: Annotated[float, Field(ge=0.1, le=300)] = 1.0
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 3


class CloudFallback(ApiModel):
    """An OIP endpoint in the cloud used when the pool cannot serve (hybrid pattern)."""

    endpoint: Annotated[str, Field(pattern=r"^[-A-Za-z0-9.]+:[0-9]{1,5}$")] = Field(
        description="host:port of an OIP gRPC endpoint"
    )
    token_secret_ref: SecretKeyRef | None = None
    tls: bool = True
    max_share: Annotated[float, Field(ge=0, le=1)] = 0.1
    price_per1k_usd: Annotated[float, Field(ge=0, alias="pricePer1kUsd")] = 0.0


class CacheLimits(ApiModel):
    max_entries: Annotated[int, Field(ge=0, le=10_000_000)] = 10000
    max_bytes: Annotated[str, Field(pattern=QUANTITY)] = "64Mi"


class Auth(ApiModel):
    token_secret_ref: SecretKeyRef | None = None
    tls_secret_ref: SecretKeyRef | None = Field(
        default=None, description="kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt for mTLS)"
    )
    mutual_tls: bool = False


class DeviceCost(ApiModel):
    """The seed article's TCO inputs, per device unless said otherwise."""

    device_price_usd: Annotated[float, Field(ge=0)] = 75.0
    hat_price_usd: Annotated[float, Field(ge=0)] = 130.0
    lifespan_years: Annotated[float, Field(ge=0.1, le=50)] = 3.0
    watts: Annotated[float, Field(ge=0, le=1000)] = 10.0
    electricity_usd_per_kwh: Annotated[float, Field(ge=0)] = 0.12
    mgmt_usd_per_device_year: Annotated[float, Field(ge=0)] = 60.0
    connectivity_usd_per_device_year: Annotated[float, Field(ge=0)] = 0.0
    shared_ops_usd_per_year: Annotated[float, Field(ge=0)] = 0.0


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
    accelerators: Annotated[list[Accelerator], Field(min_length=1, max_length=3)] = Field(
        default_factory=lambda: list(ACCELERATORS),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    agent: AgentSettings = Field(default_factory=AgentSettings)
    routing: Routing = Field(default_factory=Routing)
    failure_detection: FailureDetection = Field(default_factory=FailureDetection)
    cloud_fallback: CloudFallback | None = None
    cache: CacheLimits = Field(default_factory=CacheLimits)
    auth: Auth = Field(default_factory=Auth)
    cost: DeviceCost = Field(default_factory=DeviceCost)
    max_concurrent_loads_per_node: Annotated[int, Field(ge=1, le=16)] = 1

    @model_validator(mode="after")
    def _mtls(self) -> Self:
        if self.auth.mutual_tls and self.auth.tls_secret_ref is None:
            raise ValueError("auth.mutualTls needs auth.tlsSecretRef")
        return self


class PoolNode(ApiModel):
    name: str
    accelerator: str = "cpu"
    ready: bool = False
    address: str | None = None
    models: list[str] = Field(default_factory=list)
    queue_depth: int = 0
    temperature_c: float | None = None
    watts: float | None = None
    last_seen: str | None = None
    reason: str | None = None
    cloud_requests: int = 0  # answered by the cloud fallback for this node since its agent started


class PoolCapacity(ApiModel):
    nodes_by_accelerator: dict[str, int] = Field(default_factory=dict)
    model_slots_free: int = 0
    inferences_per_second: float = 0.0


class PoolCost(ApiModel):
    per_device_year_usd: float | None = None
    fleet_per_year_usd: float | None = None
    measured_per_inference_usd: float | None = None
    per1k_usd: float | None = Field(default=None, alias="per1kUsd")
    cloud_per1k_usd: float | None = Field(default=None, alias="cloudPer1kUsd")
    cloud_break_even_per_device_day: float | None = None
    cloud_fallback_spend_usd: float | None = None
    energy_source: Literal["measured", "nameplate"] | None = None


class InferencePoolStatus(ApiModel):
    model_config = STATUS_CONFIG

    observed_generation: int | None = None
    nodes_ready: int = 0
    nodes_total: int = 0
    models: int = 0
    nodes: list[PoolNode] = Field(default_factory=list)
    capacity: PoolCapacity = Field(default_factory=PoolCapacity)
    conditions: list[Condition] = Field(default_factory=list)
    cost: PoolCost = Field(default_factory=PoolCost)
    service: str | None = None


class InferencePool(ApiModel):
    """A pool of Pi + AI HAT+ nodes serving EdgeModels as one endpoint."""

    api_version: Literal["hatswarm.io/v1alpha1"] = API_VERSION
    kind: Literal["InferencePool"] = "InferencePool"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: InferencePoolSpec = Field(default_factory=InferencePoolSpec)
    status: InferencePoolStatus | None = None
