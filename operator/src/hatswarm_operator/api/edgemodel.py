"""EdgeModel: one model (and its versions, adapters, rollout and SLO) served by a pool."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from hatswarm_operator.api.common import (
    API_VERSION,
    STATUS_CONFIG,
    Accelerator,
    ApiModel,
    ArtifactUri,
    Condition,
    DnsLabel,
    LabelMap,
    ObjectMeta,
    SecretKeyRef,
    Sha256,
    cel,
    with_rules,
)

Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]
OipDatatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip


class ArtifactSignature(ApiModel):
    """ed25519 signature (base64) over the artifact's raw sha256 digest."""

    value: Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{86}==$", description="base64, 64 bytes")]
    public_key_ref: SecretKeyRef = Field(
        description="Secret key holding the ed25519 public key (PEM or base64 of 32 raw bytes)"
    )


class Artifact(ApiModel):
    """The model compiled for one accelerator: a HEF for a Hailo chip, ONNX for the CPU."""

    accelerator: Accelerator
    format: Literal["hef", "onnx"]
    uri: ArtifactUri
    sha256: Sha256
    signature: ArtifactSignature | None = None
    throughput_fps: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="Measured inferences/s at batch 1 on this accelerator (placement weighs by it)",
    )


class Replicas(ApiModel):
    """Replica bounds and the desired count; `kubectl scale` sets `desired`.

    The operator clamps `desired` into [min, max] (and autoscaling moves it there) rather than
    refusing it, so `kubectl scale --replicas=99` means "as many as allowed".
    """

    model_config = with_rules(
        cel("self.min <= self.max", "replicas.min must be <= replicas.max"),
    )

    min: Annotated[int, Field(ge=0, le=1000)] = 1
    max: Annotated[int, Field(ge=1, le=1000)] = 1
    desired: Annotated[int, Field(ge=0, le=1000)] = 1

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min > self.max:
            raise ValueError("replicas.min must be <= replicas.max")
        return self

    def target(self) -> int:
        """The replica count to place before autoscaling: desired clamped into [min, max]."""
        return min(max(self.desired, self.min), self.max)


class Autoscale(ApiModel):
    """Scale between replicas.min and replicas.max on measured queue depth and rate."""

    enabled: bool = False
    target_queue_depth: Annotated[float, Field(ge=0.1, le=10000)] = 4.0
    target_utilization_percent: Annotated[int, Field(ge=1, le=100)] = 70
    cooldown_seconds: Annotated[int, Field(ge=0, le=86400)] = 60


class ReplicaResources(ApiModel):
    """What one replica takes from a node (the agent refuses loads beyond its capacity)."""

    memory_mi_b: Annotated[int, Field(ge=1, le=65536, alias="memoryMiB")] = 256
    npu_contexts: Annotated[int, Field(ge=0, le=16)] = 1


class Placement(ApiModel):
    node_selector: LabelMap = Field(default_factory=dict)
    spread_key: Annotated[str, Field(max_length=316)] | None = Field(
        default=None, description="Node label to spread replicas over, e.g. a production line"
    )


class RollbackThresholds(ApiModel):
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    max_p99_latency_ms: Annotated[float, Field(ge=0)] | None = None


class Rollout(ApiModel):
    """Canary rollout of a new spec.version: gate, then weights stepping up, auto rollback."""

    model_config = with_rules(
        cel(
            "!has(self.steps) || !has(self.canaryWeight)"
            " || self.steps.all(s, s >= self.canaryWeight)",
            "every rollout step must be >= canaryWeight",
        )
    )

    strategy: Literal["Canary", "Recreate"] = "Canary"
    canary_weight: Annotated[int, Field(ge=0, le=100)] = 10
    steps: Annotated[list[Annotated[int, Field(ge=1, le=100)]], Field(max_length=20)] = Field(
        default_factory=lambda: [10, 50, 100]
    )
    analysis_window_seconds: Annotated[int, Field(ge=1, le=86400)] = 60
    rollback: RollbackThresholds = Field(default_factory=RollbackThresholds)

    @model_validator(mode="after")
    def _steps(self) -> Self:
        if any(s < self.canary_weight for s in self.steps):
            raise ValueError("every rollout step must be >= canaryWeight")
        return self


class ResponseCache(ApiModel):
    enabled: bool = False
    ttl_seconds: Annotated[int, Field(ge=1, le=604800)] = 300


class CloudFallbackPolicy(ApiModel):
    allowed: bool = False


class Slo(ApiModel):
    p99_latency_ms: Annotated[float, Field(ge=0.1, le=600000)] = 200.0
    availability_percent: Annotated[float, Field(ge=0, le=100)] = 99.9


class CostAttribution(ApiModel):
    """Showback labels: cost gauges carry them so a team's bill is one PromQL sum away."""

    team: Annotated[str, Field(max_length=63)] | None = None
    customer: Annotated[str, Field(max_length=63)] | None = None
    product_line: Annotated[str, Field(max_length=63)] | None = None


class Adapter(ApiModel):
    """A LoRA adapter loaded at run time beside the base model."""

    name: DnsLabel
    uri: ArtifactUri
    sha256: Sha256


class EscalationTarget(ApiModel):
    model_config = with_rules(
        cel(
            "has(self.model) != (has(self.cloud) && self.cloud)",
            "escalation target is exactly one of model or cloud",
        )
    )

    model: DnsLabel | None = None
    cloud: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.model is not None) == bool(self.cloud):
            raise ValueError("escalation target is exactly one of model or cloud")
        return self


class Escalation(ApiModel):
    """Send a request on when the named output's top probability is under the threshold."""

    output: Annotated[str, Field(min_length=1, max_length=256)]
    threshold: Annotated[float, Field(ge=0, le=1)]
    target: EscalationTarget


class SampleTensor(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    datatype: OipDatatype = "FP32"
    shape: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=8)]
    data: Annotated[list[float], Field(max_length=65536)]


class ValidationSample(ApiModel):
    inputs: Annotated[list[SampleTensor], Field(min_length=1, max_length=16)]
    expected: Annotated[list[SampleTensor], Field(min_length=1, max_length=16)]


class ValidationGate(ApiModel):
    """What a new version must show on one node before it takes any traffic."""

    samples: Annotated[list[ValidationSample], Field(min_length=1, max_length=64)]
    absolute_tolerance: Annotated[float, Field(ge=0)] = 1e-3
    relative_tolerance: Annotated[float, Field(ge=0)] = 1e-3
    max_latency_ms: Annotated[float, Field(ge=0.1)] | None = None


class EdgeModelSpec(ApiModel):
    model_config = with_rules(
        cel(
            "self.artifacts.all(a, (a.accelerator == 'cpu') == (a.format == 'onnx'))",
            "hailo accelerators take format hef, cpu takes format onnx",
            ".artifacts",
        ),
    )

    pool: DnsLabel = Field(description="The InferencePool (same namespace) this model runs in")
    version: Annotated[
        str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.+]*$")
    ]
    artifacts: Annotated[list[Artifact], Field(min_length=1, max_length=4)] = Field(
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["accelerator"],
        },
        description="One artifact per accelerator (hailo8l, hailo8, hailo10h, cpu)",
    )
    replicas: Replicas = Field(default_factory=Replicas)
    autoscale: Autoscale = Field(default_factory=Autoscale)
    resources: ReplicaResources = Field(default_factory=ReplicaResources)
    placement: Placement = Field(default_factory=Placement)
    rollout: Rollout = Field(default_factory=Rollout)
    cache: ResponseCache = Field(default_factory=ResponseCache)
    cloud_fallback: CloudFallbackPolicy = Field(default_factory=CloudFallbackPolicy)
    slo: Slo = Field(default_factory=Slo)
    cost_attribution: CostAttribution = Field(default_factory=CostAttribution)
    adapters: Annotated[list[Adapter], Field(max_length=64)] = Field(default_factory=list)
    escalation: Escalation | None = None
    validation: ValidationGate | None = None

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, artifacts: list[Artifact]) -> list[Artifact]:
        kinds = [a.accelerator for a in artifacts]
        if len(kinds) != len(set(kinds)):
            raise ValueError("at most one artifact per accelerator")
        for a in artifacts:
            if (a.accelerator == "cpu") != (a.format == "onnx"):
                raise ValueError("hailo accelerators take format hef, cpu takes format onnx")
        return artifacts

    def artifact_for(self, accelerator: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.accelerator == accelerator), None)


class ModelPlacement(ApiModel):
    node: str
    version: str
    state: Literal["Loading", "Ready", "Failed", "Unloading", "Validating"]
    weight: float | None = None
    message: str | None = None


class CanaryStatus(ApiModel):
    version: str
    weight: int = 0
    step: int = 0
    phase: Literal["Validating", "Progressing", "Succeeded", "RolledBack", "Failed"]
    started_at: str | None = None
    message: str | None = None


class EdgeModelStatus(ApiModel):
    model_config = STATUS_CONFIG

    phase: Phase = "Pending"
    observed_generation: int | None = None
    replicas: int = Field(default=0, description="Replicas placed (scale subresource)")
    desired_replicas: int = 0
    ready_replicas: int = 0
    ready: str = Field(default="0/0", description="ready/desired, for kubectl get")
    version: str | None = None
    stable_version: str | None = None
    stable_artifacts: Annotated[list[Artifact], Field(max_length=4)] | None = Field(
        default=None,
        description="The stable version's artifacts, kept while spec.artifacts holds a new "
        "version's (so the stable version can still be re-placed during a rollout)",
    )
    canary: CanaryStatus | None = None
    placements: list[ModelPlacement] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    request_rate: float | None = Field(default=None, description="req/s, recent window")
    p99_latency_ms: float | None = None
    cost_per1k_usd: float | None = Field(default=None, alias="costPer1kUsd")
    last_scale_time: str | None = None
    selector: str | None = Field(
        default=None,
        description="The pool's agent pods, which all answer for the model (scale subresource)",
    )


class EdgeModel(ApiModel):
    """An ML model the pool places, loads, routes, rolls out and bills."""

    api_version: Literal["hatswarm.io/v1alpha1"] = API_VERSION
    kind: Literal["EdgeModel"] = "EdgeModel"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: EdgeModelSpec
    status: EdgeModelStatus | None = None
