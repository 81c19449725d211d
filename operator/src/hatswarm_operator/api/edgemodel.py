"""EdgeModel: one model (and its versions, adapters, rollout and SLO) served by a pool."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from hatswarm_operator.api.common import (
    API_VERSION,
    CONDITIONS_LIST,
    DNS_LABEL,
    STATUS_CONFIG,
    Accelerator,
    ApiModel,
    ArtifactUri,
    Condition,
    DnsLabel,
    LabelMap,
    ObjectMeta,
    PoolName,
    SecretKeyRef,
    Sha256,
    Time,
    cel,
    with_rules,
)


class ModelMeta(ObjectMeta):
    """Object metadata; an EdgeModel's name is a DNS-1123 label: it is a label value
    (hatswarm.io/model) and the model name clients send."""

    name: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] = ""
    """The model's name (lowercase letters, digits and '-', at most 63 characters)."""


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


Task = Literal["tensor", "generate", "embed"]
"""What a model does, which decides the runtime that loads each artifact."""
NON_GENERATIVE_NPUS: tuple[Accelerator, ...] = ("hailo8l", "hailo8")
"""NPUs without a generative runtime: HailoRT's GenAI API (LLM) runs on the Hailo-10H only."""


class Artifact(ApiModel):
    """The model built for one accelerator: a HEF for a Hailo chip, ONNX or GGUF for the CPU.

    For `task: generate` the cpu artifact is a tarball (.tar or .tar.gz) of an onnxruntime-genai
    model folder (genai_config.json, model.onnx(+.data), tokenizer files) or a GGUF file
    (llama.cpp), and the hailo10h one an LLM HEF for HailoRT's GenAI API; for `task: embed` a
    tarball of an ONNX encoder folder (model.onnx, tokenizer.json) or a GGUF file. The sha256 is
    the file's (the tarball's, checked before it is unpacked).
    """

    accelerator: Accelerator
    """Accelerator this artifact runs on: hailo8l, hailo8, hailo10h or cpu (one artifact each)."""
    format: Literal["hef", "onnx", "gguf"]
    """hef (compiled by the Hailo Dataflow Compiler) for hailo8l/hailo8/hailo10h; onnx
    (onnxruntime, onnxruntime-genai: a .onnx file, or for generate/embed a tarball of the model
    folder) or gguf (llama.cpp) for cpu."""
    uri: ArtifactUri
    sha256: Sha256
    signature: ArtifactSignature | None = None
    throughput_fps: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="Measured inferences/s at batch 1 on this accelerator (placement weighs by it)",
    )
    memory_mi_b: Annotated[int, Field(ge=1, le=65536)] | None = None
    """Memory one replica of this build takes on its node, in MiB (weights, KV cache, runtime);
    placement counts it instead of resources.memoryMiB. Set it for generative models: a 0.5B
    int4 decoder on the CPU takes about 1000, the same model on a Hailo-10H little host memory."""


class Replicas(ApiModel):
    """Replica bounds and the desired count; `kubectl scale` sets `desired`.

    The operator clamps `desired` into [min, max] (and autoscaling moves it there) rather than
    refusing it, so `kubectl scale --replicas=99` means "as many as allowed".
    """

    model_config = with_rules(
        cel("!has(self.max) || self.min <= self.max", "replicas.min must be <= replicas.max"),
    )

    min: Annotated[int, Field(ge=0, le=1000)] = 1
    """Fewest replicas to keep, also while autoscaling."""
    max: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Most replicas autoscaling may place; unset, it follows desired and min."""
    desired: Annotated[int, Field(ge=0, le=1000)] = 1
    """Replicas to place (what `kubectl scale` sets); clamped into [min, max]."""

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self

    def upper(self) -> int:
        """`max` as set, else the larger of desired and min (so `{min: 2}` means 2 replicas
        and `kubectl scale --replicas=3` means 3)."""
        return self.max if self.max is not None else max(self.desired, self.min, 1)

    def target(self) -> int:
        """The replica count to place before autoscaling: desired clamped into [min, max]."""
        return min(max(self.desired, self.min), self.upper())


class Autoscale(ApiModel):
    """Scale between replicas.min and replicas.max on measured queue depth and rate."""

    enabled: bool = False
    """Move replicas.desired between min and max on measured load."""
    target_queue_depth: Annotated[float, Field(ge=0.1, le=10000)] = 4.0
    """Requests waiting per replica to aim for; more scales up."""
    target_utilization_percent: Annotated[int, Field(ge=1, le=100)] = 70
    """NPU busy share per replica to aim for, in percent."""
    cooldown_seconds: Annotated[int, Field(ge=0, le=86400)] = 60
    """Seconds between two scaling steps."""


class ReplicaResources(ApiModel):
    """What one replica takes from a node (the agent refuses loads beyond its capacity)."""

    memory_mi_b: Annotated[int, Field(ge=1, le=65536, alias="memoryMiB")] = 256
    """Memory one replica takes on a node, in MiB (placement checks the node's room)."""
    npu_contexts: Annotated[int, Field(ge=0, le=16)] = 1
    """NPU contexts one replica takes (a Hailo device has a few)."""


class Placement(ApiModel):
    node_selector: LabelMap = Field(default_factory=dict)
    """Only nodes with these labels take replicas (within the pool's nodes)."""
    spread_key: Annotated[str, Field(max_length=316)] | None = Field(
        default=None, description="Node label to spread replicas over, e.g. a production line"
    )


class RollbackThresholds(ApiModel):
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Roll back when the canary's error share exceeds this fraction (0..1)."""
    max_p99_latency_ms: Annotated[float, Field(ge=0)] | None = None
    """Roll back when the canary's p99 latency exceeds this (ms); unset: the SLO's."""


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
    """Canary (weights step up, automatic rollback) or Recreate (replace at once)."""
    canary_weight: Annotated[int, Field(ge=0, le=100)] = 10
    """Percent of traffic the new version takes first."""
    steps: Annotated[list[Annotated[int, Field(ge=1, le=100)]], Field(max_length=20)] = Field(
        default_factory=lambda: [10, 50, 100]
    )
    """Traffic percentages the canary steps through, each held for analysisWindowSeconds."""
    analysis_window_seconds: Annotated[int, Field(ge=1, le=86400)] = 60
    """Seconds each step is watched before the next one."""
    rollback: RollbackThresholds = Field(default_factory=RollbackThresholds)
    """When the canary is rolled back automatically."""

    @model_validator(mode="after")
    def _steps(self) -> Self:
        low = [s for s in self.steps if s < self.canary_weight]
        if low:
            raise ValueError(
                f"steps {low} are below canaryWeight ({self.canary_weight}): "
                "every rollout step must be >= canaryWeight"
            )
        return self


class ResponseCache(ApiModel):
    enabled: bool = False
    """Answer repeated identical requests from the agents' cache (deterministic models only)."""
    ttl_seconds: Annotated[int, Field(ge=1, le=604800)] = 300
    """Seconds a cached answer stays valid."""


class CloudFallbackPolicy(ApiModel):
    """When this model's requests may go to the pool's cloud fallback.

    `allowed`: when the pool cannot serve them. For generative models also on escalation
    (independent of `allowed`, within the pool's `cloudFallback.maxShare`): a prompt longer than
    the edge model's context window (`longPrompts`), or an answer whose first `judgeTokens`
    tokens have a mean log-probability under `minMeanLogprob` (held back until judged; needs a
    runtime that exposes logits: onnxruntime-genai does, HailoRT GenAI does not).
    """

    allowed: bool = False
    """May requests go to the pool's cloud fallback when the pool cannot serve them."""
    cloud_model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """The cloud's name for this model (generations; default: the pool's cloudFallback.openai.model)."""
    long_prompts: bool = False
    """Send prompts longer than the edge model's context window to the cloud (generations)."""
    min_mean_logprob: Annotated[float, Field(ge=-1000, le=0)] | None = None
    """Send a generation to the cloud when the mean natural-log probability of its first judgeTokens tokens is below this (e.g. -2.5); unset: never."""
    judge_tokens: Annotated[int, Field(ge=1, le=4096)] = 16
    """Tokens held back and judged by minMeanLogprob before the edge answer streams."""


class Slo(ApiModel):
    p99_latency_ms: Annotated[float, Field(ge=0.1, le=600000)] = 200.0
    """Target p99 latency in ms: placement, autoscaling and rollbacks are judged by it."""
    availability_percent: Annotated[float, Field(ge=0, le=100)] = 99.9
    """Target share of requests answered successfully, in percent."""
    ttft_p99_ms: Annotated[float, Field(ge=1, le=600000)] | None = None
    """Target p99 time to first token in ms (task generate): the SLOMet condition compares the
    measured status.generation.ttftP99Ms with it, and an Event says when that flips. Unset: no
    TTFT target."""


class CostAttribution(ApiModel):
    """Showback labels: cost gauges carry them so a team's bill is one PromQL sum away."""

    team: Annotated[str, Field(max_length=63)] | None = None
    """Team billed for this model's cost (showback label)."""
    customer: Annotated[str, Field(max_length=63)] | None = None
    """Customer billed for this model's cost (showback label)."""
    product_line: Annotated[str, Field(max_length=63)] | None = None
    """Product line billed for this model's cost (showback label)."""


class Adapter(ApiModel):
    """A LoRA adapter loaded at run time beside the base model."""

    name: DnsLabel
    """Name requests use to ask for this adapter (parameter hatswarm.adapter)."""
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
    """An EdgeModel (same namespace) to send uncertain requests on to."""
    cloud: bool | None = None
    """Send uncertain requests to the pool's cloud fallback instead."""

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.model is not None) == bool(self.cloud):
            given = f"model {self.model!r} and cloud: true" if self.model else "neither"
            raise ValueError(f"escalation target is exactly one of model or cloud, got {given}")
        return self


class Escalation(ApiModel):
    """Send a request on when the named output's top probability is under the threshold."""

    output: Annotated[str, Field(min_length=1, max_length=256)]
    """Output tensor holding class probabilities."""
    threshold: Annotated[float, Field(ge=0, le=1)]
    """Escalate when the top probability is below this (0..1)."""
    target: EscalationTarget
    """Where uncertain requests go: exactly one of model or cloud."""


class SampleTensor(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    """Tensor name, as in the model's metadata."""
    datatype: OipDatatype = "FP32"
    """Open Inference Protocol datatype (FP32, UINT8, ...)."""
    shape: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=8)]
    """Tensor shape, batch dimension included."""
    data: Annotated[list[float], Field(max_length=65536)]
    """Values, flattened in row-major order."""


class ValidationSample(ApiModel):
    inputs: Annotated[list[SampleTensor], Field(min_length=1, max_length=16)]
    """Inputs of one request."""
    expected: Annotated[list[SampleTensor], Field(min_length=1, max_length=16)]
    """Outputs the new version must produce for these inputs (within tolerance)."""


class ValidationGate(ApiModel):
    """What a new version must show on one node before it takes any traffic."""

    samples: Annotated[list[ValidationSample], Field(min_length=1, max_length=64)]
    """Requests with known answers, run on one node before any traffic."""
    absolute_tolerance: Annotated[float, Field(ge=0)] = 1e-3
    """Largest absolute difference allowed per value."""
    relative_tolerance: Annotated[float, Field(ge=0)] = 1e-3
    """Largest relative difference allowed per value."""
    max_latency_ms: Annotated[float, Field(ge=0.1)] | None = None
    """Refuse the version when a sample takes longer than this (ms)."""


class EdgeModelSpec(ApiModel):
    model_config = with_rules(
        cel(
            "self.artifacts.all(a, (a.accelerator == 'cpu') == (a.format in ['onnx', 'gguf']))",
            "hailo accelerators take format hef, cpu takes format onnx or gguf",
            ".artifacts",
        ),
        cel(
            "!has(self.task) || self.task == 'tensor'"
            " || self.artifacts.all(a, a.accelerator != 'hailo8' && a.accelerator != 'hailo8l')",
            "task generate/embed has no runtime on hailo8 or hailo8l (Hailo's GenAI API runs on "
            "the Hailo-10H only): give a hailo10h HEF or a cpu artifact",
            ".artifacts",
        ),
        cel(
            "(has(self.task) && self.task != 'tensor')"
            " || self.artifacts.all(a, a.format != 'gguf')",
            "a GGUF file is a llama.cpp model: format gguf needs task generate or embed",
            ".artifacts",
        ),
        cel(
            "!has(self.task) || self.task != 'embed'"
            " || self.artifacts.all(a, a.accelerator == 'cpu')",
            "task embed runs on cpu only (a tarball of an ONNX encoder folder)",
            ".artifacts",
        ),
        cel(
            "!has(self.task) || self.task == 'tensor'"
            " || (!has(self.validation) && !has(self.escalation))",
            "validation samples and escalation read tensors: task tensor only",
            ".task",
        ),
        cel(
            "!has(self.slo) || !has(self.slo.ttftP99Ms)"
            " || (has(self.task) && self.task == 'generate')",
            "slo.ttftP99Ms needs task generate (only generations have a first token)",
            ".slo",
        ),
        cel(
            "!has(self.autoscale) || !self.autoscale.enabled"
            " || (has(self.replicas) && has(self.replicas.max))",
            "autoscale.enabled needs replicas.max (the most replicas autoscaling may place)",
            ".replicas",
        ),
    )

    pool: PoolName = Field(description="The InferencePool (same namespace) this model runs in")
    task: Task = "tensor"
    """What the model does: tensor (fixed-shape tensors in and out over the Open Inference
    Protocol: classifiers, detectors), generate (a decoder LLM streaming tokens: onnxruntime-genai
    on cpu, HailoRT GenAI on hailo10h; served on the agents' OpenAI, Ollama and Triton
    ModelStreamInfer doors) or embed (text to vectors on cpu: /v1/embeddings). Generative and
    embedding models never run on hailo8/hailo8l."""
    version: Annotated[
        str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.+]*$")
    ]
    """Version of the model; changing it starts a rollout."""
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
    """Which of the pool's nodes may take replicas, and how to spread them."""
    rollout: Rollout = Field(default_factory=Rollout)
    cache: ResponseCache = Field(default_factory=ResponseCache)
    """Response cache for repeated identical requests."""
    cloud_fallback: CloudFallbackPolicy = Field(default_factory=CloudFallbackPolicy)
    """Whether the pool's cloud fallback may serve this model."""
    slo: Slo = Field(default_factory=Slo)
    """Latency and availability targets."""
    cost_attribution: CostAttribution = Field(default_factory=CostAttribution)
    adapters: Annotated[list[Adapter], Field(max_length=64)] = Field(default_factory=list)
    """LoRA adapters requests may select (up to 64)."""
    escalation: Escalation | None = None
    validation: ValidationGate | None = None

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, artifacts: list[Artifact]) -> list[Artifact]:
        kinds = [a.accelerator for a in artifacts]
        twice = sorted({k for k in kinds if kinds.count(k) > 1})
        if twice:
            raise ValueError(
                f"accelerator {', '.join(twice)} has two artifacts: at most one artifact per "
                "accelerator"
            )
        for a in artifacts:
            if (a.accelerator == "cpu") != (a.format in ("onnx", "gguf")):
                raise ValueError(
                    f"format {a.format!r} on accelerator {a.accelerator!r}: hailo accelerators "
                    "take format hef, cpu takes format onnx or gguf"
                )
        return artifacts

    @model_validator(mode="after")
    def _task_runs_there(self) -> Self:
        if self.task == "tensor":
            if any(a.format == "gguf" for a in self.artifacts):
                raise ValueError(
                    "artifacts: format 'gguf' with task 'tensor': a GGUF file is a llama.cpp "
                    "model: give task generate or embed"
                )
            return self
        kinds = [a.accelerator for a in self.artifacts]
        npus = [k for k in kinds if k in NON_GENERATIVE_NPUS]
        if npus:
            raise ValueError(
                f"artifacts: accelerator {', '.join(npus)} with task {self.task!r}: task "
                "generate/embed has no runtime on hailo8 or hailo8l (Hailo's GenAI API runs on "
                "the Hailo-10H only): give a hailo10h HEF or a cpu artifact"
            )
        if self.task == "embed" and kinds != ["cpu"]:
            others = ", ".join(k for k in kinds if k != "cpu")
            raise ValueError(
                f"artifacts: accelerator {others} with task 'embed': task embed runs on cpu "
                "only (a tarball of an ONNX encoder folder)"
            )
        tensor_only = [f for f in ("validation", "escalation") if getattr(self, f) is not None]
        if tensor_only:
            raise ValueError(
                f"task {self.task!r} with {' and '.join(tensor_only)}: validation samples and "
                "escalation read tensors: task tensor only"
            )
        return self

    @model_validator(mode="after")
    def _ttft_needs_generate(self) -> Self:
        if self.slo.ttft_p99_ms is not None and self.task != "generate":
            raise ValueError(
                f"slo.ttftP99Ms with task {self.task!r}: slo.ttftP99Ms needs task generate "
                "(only generations have a first token)"
            )
        return self

    @model_validator(mode="after")
    def _autoscale_bound(self) -> Self:
        if self.autoscale.enabled and self.replicas.max is None:
            raise ValueError(
                "autoscale.enabled needs replicas.max (the most replicas autoscaling may place)"
            )
        return self

    def artifact_for(self, accelerator: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.accelerator == accelerator), None)


class ModelPlacement(ApiModel):
    node: str
    """Node holding the replica."""
    version: str
    """Version the replica runs."""
    state: Literal["Loading", "Ready", "Failed", "Unloading", "Validating"]
    """Loading, Validating, Ready, Failed or Unloading."""
    weight: float | None = None
    """Share of the model's traffic this replica gets (0..1)."""
    message: str | None = None
    """Why the replica is not Ready, when it is not."""


class CanaryStatus(ApiModel):
    version: str
    """Version being rolled out."""
    weight: int = 0
    """Percent of traffic the canary takes now."""
    step: int = 0
    """Index into spec.rollout.steps."""
    phase: Literal["Validating", "Progressing", "Succeeded", "RolledBack", "Failed"]
    """Validating, Progressing, Succeeded, RolledBack or Failed."""
    started_at: Time | None = None
    """When the current step started (RFC 3339)."""
    message: str | None = None
    """What the rollout is waiting for, or why it stopped."""


class GenerationStatus(ApiModel):
    """A generative model's load in tokens across its Ready replicas, and what clients see."""

    tokens_per_second: float = 0.0
    """Tokens generated per second, all replicas together (last 10 s)."""
    ttft_p50_ms: float | None = None
    """Median time to first token in ms (the slowest replica's, last 60 s); absent until
    measured."""
    ttft_p99_ms: float | None = None
    """p99 time to first token in ms (the slowest replica's, last 60 s); absent until measured."""
    active_sequences: int = 0
    """Sequences generating now."""
    sequence_slots: int = 0
    """Sequences the replicas may run at once (more are queued, then refused with 429)."""
    queued_prompt_tokens: int = 0
    """Prompt tokens waiting for a sequence slot."""
    kv_cache_utilization: float | None = None
    """KV cache tokens held over the budget (slots x context length), 0..1."""
    prefix_hit_tokens: int = 0
    """Prompt tokens served from the replicas' prefix caches instead of prefilled, since load."""


class EdgeModelStatus(ApiModel):
    model_config = STATUS_CONFIG

    phase: Phase = "Pending"
    """Pending, Progressing, Ready, Degraded or Failed."""
    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    replicas: int = Field(default=0, description="Replicas placed (scale subresource)")
    desired_replicas: int = 0
    """Replicas wanted after clamping and autoscaling."""
    ready_replicas: int = 0
    """Replicas Ready and serving the current version."""
    ready: str = Field(default="0/0", description="ready/desired, for kubectl get")
    version: str | None = None
    """Version taking traffic."""
    stable_version: str | None = None
    """Last version that completed its rollout."""
    stable_artifacts: Annotated[list[Artifact], Field(max_length=4)] | None = Field(
        default=None,
        description="The stable version's artifacts, kept while spec.artifacts holds a new "
        "version's (so the stable version can still be re-placed during a rollout)",
    )
    canary: CanaryStatus | None = None
    """The rollout in progress, if any."""
    placements: list[ModelPlacement] = Field(default_factory=list)
    """Every replica: node, version, state and traffic weight."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    """Ready, Progressing, Degraded, ... (kubectl wait --for=condition=Ready)."""
    request_rate: float | None = Field(default=None, description="req/s, recent window")
    p99_latency_ms: float | None = None
    """Measured p99 latency across replicas (ms); absent until measured."""
    cost_per1k_usd: float | None = Field(default=None, alias="costPer1kUsd")
    """Measured cost per 1,000 inferences in USD; absent until measured."""
    edge_tokens: int | None = None
    """Tokens (prompt + completion) the pool's nodes processed for this model since the operator started (generative models)."""
    cloud_tokens: int | None = None
    """Tokens (prompt + completion) the pool's cloud fallback processed for this model since the operator started (generative models)."""
    cloud_token_spend_usd: float | None = None
    """What the cloud charged for this model's cloud tokens so far in USD (spec.cloudFallback.openai's prices)."""
    generation: GenerationStatus | None = None
    """Load in tokens, tokens/s and time to first token (generative models only)."""
    last_scale_time: Time | None = None
    """When autoscaling last changed the replica count (RFC 3339)."""
    selector: str | None = Field(
        default=None,
        description="The pool's agent pods, which all answer for the model (scale subresource)",
    )


class EdgeModel(ApiModel):
    """An ML model the pool places, loads, routes, rolls out and bills."""

    api_version: Literal["hatswarm.io/v1alpha1"] = API_VERSION
    """hatswarm.io/v1alpha1"""
    kind: Literal["EdgeModel"] = "EdgeModel"
    """EdgeModel"""
    metadata: ModelMeta = Field(default_factory=ModelMeta)
    """Standard object metadata; the name is a DNS-1123 label (at most 63 characters)."""
    spec: EdgeModelSpec
    """What to serve and how."""
    status: EdgeModelStatus | None = None
    """What the operator observed (written by the operator)."""
