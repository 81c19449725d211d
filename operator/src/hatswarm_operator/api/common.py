"""Types shared by both resources, and the pydantic base every API type uses."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "hatswarm.io"
VERSION = "v1alpha1"
API_VERSION: Final = "hatswarm.io/v1alpha1"

Accelerator = Literal["hailo8l", "hailo8", "hailo10h", "cpu"]
"""A node's compute for a model: a Hailo chip (Hailo-8L and Hailo-8 on the AI HAT+, Hailo-10H on
the AI HAT+ 2) or the Pi's CPU."""
ACCELERATORS: tuple[Accelerator, ...] = ("hailo8l", "hailo8", "hailo10h", "cpu")
NPU_ACCELERATORS: tuple[Accelerator, ...] = ("hailo8l", "hailo8", "hailo10h")
ACCELERATOR_LABEL: Final = "hatswarm.io/accelerator"
"""The node label naming a node's Hailo chip: it decides which agent (and which NPU request) the
node runs; the operator then places by the chip the agent reports."""

AGENT_NAME: Final = "hatswarm-agent"
POOL_LABEL: Final = "hatswarm.io/pool"


def agent_pod_selector(pool: str) -> str:
    """The label selector of a pool's agent pods (kube/builders.label_selector says the same)."""
    return f"app.kubernetes.io/name={AGENT_NAME},{POOL_LABEL}={pool}"


DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
Sha256 = Annotated[str, Field(pattern=r"^[a-f0-9]{64}$", description="64 lowercase hex chars")]
ArtifactUri = Annotated[
    str,
    Field(
        pattern=r"^(https?|file)://\S+$",
        max_length=2048,
        description="Where the agent fetches the artifact: https://, http:// or file://",
    ),
]
LabelMap = dict[str, str]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry (a CEL rule the API server enforces)."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


_CAMEL: ConfigDict = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
# Status is written by the operator and read back: tolerate fields a newer operator added.
STATUS_CONFIG: ConfigDict = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="ignore"
)


def with_rules(*rules: dict[str, str]) -> ConfigDict:
    """A model config that publishes CEL rules on the model's schema node."""
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"x-kubernetes-validations": [dict(r) for r in rules]},
    )


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in code; unknown fields are errors, not silence."""

    model_config = _CAMEL

    def wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase, defaults left out when unset."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SecretKeyRef(ApiModel):
    """A key in a Secret in the resource's namespace (mounted into the agents as a file)."""

    name: DnsLabel
    key: Annotated[str, Field(min_length=1, max_length=253)] = "token"


class Condition(ApiModel):
    """metav1.Condition, as `kubectl wait --for=condition=Ready` expects it."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(max_length=1024)] = ""
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ObjectMeta(ApiModel):
    """The part of metadata the operator reads; the rest is preserved by the API server."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = ""
    namespace: str = "default"
    generation: int = 0
    labels: LabelMap = Field(default_factory=dict)
    annotations: LabelMap = Field(default_factory=dict)
    uid: str = ""
    resource_version: str = ""
