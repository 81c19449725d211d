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


# Kubernetes name rules. A DNS-1123 label names most things; a DNS-1035 label (starts with a
# letter) names a Service, so an InferencePool (its Service is named after it) needs one. Both
# stay within 63 characters, so they also fit label values (hatswarm.io/pool, hatswarm.io/model).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
PoolName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_1035_LABEL)]
# An RFC 3339 time as Kubernetes writes it (metav1.Time): `format: date-time` in the schema.
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
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


# Every field's docstring (the string under it) becomes its schema description: what
# `kubectl explain` prints.
_CAMEL: ConfigDict = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="forbid", use_attribute_docstrings=True
)
# Status is written by the operator and read back: tolerate fields a newer operator added.
STATUS_CONFIG: ConfigDict = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="ignore", use_attribute_docstrings=True
)


def with_rules(*rules: dict[str, str]) -> ConfigDict:
    """A model config that publishes CEL rules on the model's schema node."""
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={"x-kubernetes-validations": [dict(r) for r in rules]},
    )


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in code; unknown fields are errors, not silence."""

    model_config = _CAMEL

    def wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase, defaults left out when unset."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


SECRET_KEY = r"^[-._a-zA-Z0-9]+$"  # what a Secret's data keys may be


class SecretRef(ApiModel):
    """A Secret in the resource's namespace, whose keys are fixed by its type."""

    name: DnsLabel
    """Name of the Secret."""


class SecretKeyRef(ApiModel):
    """A key in a Secret in the resource's namespace (mounted into the agents as a file)."""

    name: DnsLabel
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY)]
    """The key within the Secret's data."""


class TokenSecretRef(SecretKeyRef):
    """A key in a Secret holding a bearer token (one line of text)."""

    key: Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY)] = "token"
    """The key within the Secret's data that holds the token."""


class Condition(ApiModel):
    """metav1.Condition, as `kubectl wait --for=condition=Ready` expects it."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    """Kind of condition: Ready, Progressing, Degraded, ... (one entry per type)."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds: True, False or Unknown."""
    reason: Annotated[str, Field(max_length=1024)] = ""
    """Why, as a CamelCase word for machines (e.g. NodeLost)."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Why, in words for people."""
    last_transition_time: Time | None = None
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed for."""


# Conditions as `kubectl` and server-side apply expect: one entry per `type`.
CONDITIONS_LIST: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class ObjectMeta(ApiModel):
    """The part of metadata the operator reads; the rest is preserved by the API server."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        use_attribute_docstrings=True,
    )

    name: str = ""
    """The object's name, unique in its namespace."""
    namespace: str = "default"
    """The namespace the object lives in."""
    generation: int = 0
    """Bumped by the API server on every spec change."""
    labels: LabelMap = Field(default_factory=dict)
    """Labels (selectors match them)."""
    annotations: LabelMap = Field(default_factory=dict)
    """Annotations (free-form metadata)."""
    uid: str = ""
    """Unique id the API server assigns."""
    resource_version: str = ""
    """Version of the stored object, for optimistic concurrency."""
