"""Render the pydantic API types as apiextensions.k8s.io/v1 CRDs with structural schemas.

pydantic emits JSON Schema (with $refs, anyOf-null for optionals, titles); Kubernetes wants a
structural OpenAPI v3 subset (everything inlined, one type per node, no additionalProperties
beside properties). This module does that translation and adds what only Kubernetes knows:
subresources, printer columns, names and categories.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from hatswarm_operator.api.common import GROUP, VERSION
from hatswarm_operator.api.edgemodel import EdgeModel
from hatswarm_operator.api.inferencepool import InferencePool

_DROP = {"title", "$defs"}


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also publish `default_factory` values, so the API server fills nested defaults."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if "default_factory" in schema and not schema.get("default_factory_takes_data"):
            factory = schema["default_factory"]
            json_schema = self.generate_inner(schema["schema"])
            value = factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                value = value.model_dump(by_alias=True, exclude_none=True, mode="json")
            json_schema["default"] = value
            return json_schema
        return super().default_schema(schema)


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}  # the field's own description/defaults win
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"not structural: anyOf with {len(options)} non-null options")
        node = {**options[0], **node}
        if "$ref" in node:
            return _structural(node, defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", 0) is None:
        del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "description" and isinstance(value, str):
            value = _paragraphs(value)
        if key == "additionalProperties" and (value is False or value is True):
            continue  # pruning drops unknown fields; preserve-unknown-fields keeps them
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    return out


def _paragraphs(text: str) -> str:
    """A docstring's lines joined into paragraphs (kubectl explain wraps them itself)."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


def _strip_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(n) for n in node]
    return node


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The openAPIV3Schema of a top-level resource type."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    schema = _structural(raw, raw.get("$defs", {}))
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": f"{GROUP}/{VERSION}"}
    props["kind"] = {"type": "string", "description": props["kind"]["enum"][0]}
    # The API server owns metadata; a CRD may only constrain its name (the kind's name rule).
    meta = props["metadata"]
    name = {k: v for k, v in meta["properties"]["name"].items() if k != "default"}
    props["metadata"] = {
        "type": "object",
        "description": meta.get("description", ""),
        "properties": {"name": name},
    }
    props["spec"].pop("default", None)
    if "status" in props:
        props["status"] = _strip_defaults(props["status"])
    schema["required"] = ["spec"]
    schema.pop("description", None)
    return {"description": _paragraphs(model.__doc__ or ""), **schema}


def _column(name: str, path: str, typ: str, description: str, priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": typ, "jsonPath": path, "description": description}
    if priority:
        col["priority"] = priority
    return col


_AGE = _column("Age", ".metadata.creationTimestamp", "date", "Time since creation")


def _crd(
    model: type[BaseModel],
    kind: str,
    plural: str,
    short: str,
    columns: list[dict[str, Any]],
    scale: dict[str, str] | None = None,
) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "hatswarm"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["hatswarm"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(model)},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def edgemodel_crd() -> dict[str, Any]:
    return _crd(
        EdgeModel,
        "EdgeModel",
        "edgemodels",
        "em",
        [
            _column("Pool", ".spec.pool", "string", "InferencePool the model runs in"),
            _column("Ready", ".status.ready", "string", "Ready/desired replicas"),
            _column("Version", ".status.version", "string", "Version taking traffic"),
            _column("Phase", ".status.phase", "string", "Lifecycle phase"),
            _column("Rate", ".status.requestRate", "number", "Requests/s (recent)", 1),
            _column("P99-ms", ".status.p99LatencyMs", "number", "p99 latency (ms)", 1),
            _column("Cost/1k", ".status.costPer1kUsd", "number", "USD per 1k inferences", 1),
            _column(
                "Tok/s", ".status.generation.tokensPerSecond", "number", "Tokens/s (recent)", 1
            ),
            _column(
                "TTFT-p99-ms",
                ".status.generation.ttftP99Ms",
                "number",
                "p99 time to first token",
                1,
            ),
            _column(
                "SLO",
                '.status.conditions[?(@.type=="SLOMet")].status',
                "string",
                "Time to first token within spec.slo.ttftP99Ms (SLOMet)",
                1,
            ),
            _AGE,
        ],
        scale={
            "specReplicasPath": ".spec.replicas.desired",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    )


def _agent_defaults_at_reconcile(crd: dict[str, Any]) -> dict[str, Any]:
    """InferencePool `spec.agent` gets no schema defaults: the API server stores only what the
    user wrote, so the operator can tell "left out" from "set" (pydantic's `model_fields_set`)
    and fill the rest at every reconcile from the cluster's agent defaults and its own version.
    A stored default would pin that value (e.g. an image tag) in the object forever."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    spec["agent"] = _strip_defaults(spec["agent"])
    return crd


def inferencepool_crd() -> dict[str, Any]:
    return _agent_defaults_at_reconcile(
        _crd(
            InferencePool,
            "InferencePool",
            "inferencepools",
            "ipool",
            [
                _column("Ready", ".status.nodesReady", "integer", "Nodes ready"),
                _column("Nodes", ".status.nodesTotal", "integer", "Nodes matching the pool"),
                _column("Models", ".status.models", "integer", "EdgeModels in the pool"),
                _column("Cost/1k", ".status.cost.per1kUsd", "number", "Measured USD per 1k"),
                _column("Cloud/1k", ".status.cost.cloudPer1kUsd", "number", "Cloud USD per 1k", 1),
                _AGE,
            ],
        )
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, in a stable order."""
    return {
        f"{GROUP}_edgemodels.yaml": edgemodel_crd(),
        f"{GROUP}_inferencepools.yaml": inferencepool_crd(),
    }
