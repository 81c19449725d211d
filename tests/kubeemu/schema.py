"""CRD structural schemas: defaulting, pruning and validation like the API server's.

The OpenAPI v3 subset of ``openAPIV3Schema`` is translated to JSON Schema draft 4 (whose
boolean ``exclusiveMinimum`` matches OpenAPI 3.0) and checked with ``jsonschema``. Errors come
back as Kubernetes field causes (``spec.replicas: Invalid value: 20: ...``).

CEL rules (``x-kubernetes-validations``) are evaluated with cel-python when it is installed and
the rule compiles: ``self`` and, on updates, ``oldSelf``; transition rules are skipped on
create. Rules cel-python cannot compile are skipped, never fatal.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from typing import Any

import jsonschema

SCHEMA_KEYS = (
    "type",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
)


@dataclass(frozen=True)
class Cause:
    """One field error, as in a Status' ``details.causes``."""

    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ...
    message: str

    def render(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Translate an OpenAPI v3 structural schema into JSON Schema draft 4."""
    out: dict[str, Any] = {k: copy.deepcopy(schema[k]) for k in SCHEMA_KEYS if k in schema}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in schema:
        out["properties"] = {k: to_json_schema(v) for k, v in schema["properties"].items()}
    if "items" in schema and isinstance(schema["items"], dict):
        out["items"] = to_json_schema(schema["items"])
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        out["additionalProperties"] = to_json_schema(additional)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [to_json_schema(s) for s in schema[key]]
    if "not" in schema:
        out["not"] = to_json_schema(schema["not"])
    return out


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Fill ``default`` values for absent properties, recursively (in place; returns value)."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key, item in value.items():
                if key not in (schema.get("properties") or {}):
                    apply_defaults(item, additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


def _prunes(schema: dict[str, Any]) -> bool:
    """Whether unknown fields under this schema are dropped."""
    return not (
        schema.get("additionalProperties") is True
        or schema.get("x-kubernetes-preserve-unknown-fields")
        or schema.get("x-kubernetes-int-or-string")
        or schema.get("x-kubernetes-embedded-resource")
    )


def prune(
    value: Any,
    schema: dict[str, Any],
    *,
    root: bool = False,
    dropped: list[str] | None = None,
    path: str = "",
) -> Any:
    """Drop fields the schema does not declare (unless it preserves unknown fields).

    The paths of dropped fields (``spec.foo``) are appended to ``dropped``.
    """
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key in list(value):
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            here = f"{path}.{key}" if path else str(key)
            if key in props:
                value[key] = prune(value[key], props[key], dropped=dropped, path=here)
            elif isinstance(additional, dict):
                value[key] = prune(value[key], additional, dropped=dropped, path=here)
            elif not _prunes(schema):
                continue
            else:
                del value[key]
                if dropped is not None:
                    dropped.append(here)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            prune(item, schema["items"], dropped=dropped, path=f"{path}[{n}]")
            for n, item in enumerate(value)
        ]
    return value


def _list_causes(value: Any, schema: dict[str, Any], path: list[str | int]) -> list[Cause]:
    """``x-kubernetes-list-type: set|map`` uniqueness, as the real server checks it."""
    causes: list[Cause] = []
    if isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: list[Any] = []
        for n, item in enumerate(value):
            if list_type == "set":
                identity: Any = item
                shown = _go_value(item)
            elif list_type == "map" and isinstance(item, dict):
                identity = {k: item.get(k) for k in keys}
                inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in identity.items())
                shown = "map[string]interface {}{" + inner + "}"
            else:
                continue
            if identity in seen:
                causes.append(
                    Cause(_field([*path, n]), "FieldValueDuplicate", f"Duplicate value: {shown}")
                )
            else:
                seen.append(identity)
        if isinstance(schema.get("items"), dict):
            for n, item in enumerate(value):
                causes += _list_causes(item, schema["items"], [*path, n])
    elif isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                causes += _list_causes(value[key], sub, [*path, key])
    return causes


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _go_value(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def _cause(error: jsonschema.ValidationError) -> Cause:
    field = _field(error.absolute_path)
    kind = error.validator
    value: Any = error.instance
    validator_value: Any = error.validator_value
    error_schema: Any = error.schema
    rendered = _go_value(value)
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return Cause(
            f"{field}.{missing}" if field else missing, "FieldValueRequired", "Required value"
        )
    if kind == "enum":
        allowed = ", ".join(json.dumps(v) for v in validator_value)
        return Cause(
            field,
            "FieldValueNotSupported",
            f"Unsupported value: {rendered}: supported values: {allowed}",
        )
    if kind == "type":
        wanted = validator_value
        wanted = wanted if isinstance(wanted, str) else wanted[0]
        detail = f"{field} in body must be of type {wanted}: {rendered}"
    elif kind in ("minimum", "exclusiveMinimum"):
        op = "greater than" if error_schema.get("exclusiveMinimum") else "greater than or equal to"
        detail = f"{field} in body should be {op} {error_schema.get('minimum')}"
    elif kind in ("maximum", "exclusiveMaximum"):
        op = "less than" if error_schema.get("exclusiveMaximum") else "less than or equal to"
        detail = f"{field} in body should be {op} {error_schema.get('maximum')}"
    elif kind == "pattern":
        detail = f"{field} in body should match '{validator_value}'"
    elif kind == "maxLength":
        detail = f"{field} in body should be at most {validator_value} chars long"
    elif kind == "minLength":
        detail = f"{field} in body should be at least {validator_value} chars long"
    elif kind == "maxItems":
        return Cause(
            field,
            "FieldValueTooMany",
            f"Too many: {len(value)}: must have at most {validator_value} items",
        )
    elif kind == "minItems":
        detail = f"{field} in body should have at least {validator_value} items"
    else:
        detail = error.message
    return Cause(field, "FieldValueInvalid", f"Invalid value: {rendered}: {detail}")


def _cel_causes(value: Any, old: Any, schema: dict[str, Any], path: list[str | int]) -> list[Cause]:
    causes: list[Cause] = []
    if value is None:
        return causes
    for rule in schema.get("x-kubernetes-validations") or []:
        verdict = _evaluate_cel(rule.get("rule", ""), value, old)
        if verdict is False:
            message = rule.get("message") or f"failed rule: {rule.get('rule')}"
            field = _field(path)
            if rule.get("fieldPath"):
                field = field + rule["fieldPath"]
            causes.append(
                Cause(field, "FieldValueInvalid", f"Invalid value: {_go_value(value)}: {message}")
            )
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                sub_old = old.get(key) if isinstance(old, dict) else None
                causes += _cel_causes(value[key], sub_old, sub, [*path, key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            causes += _cel_causes(item, None, schema["items"], [*path, n])
    return causes


@functools.lru_cache(maxsize=256)
def _cel_program(rule: str) -> Any:
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))


def _evaluate_cel(rule: str, value: Any, old: Any) -> bool | None:
    """True/False when the rule evaluates, None when it cannot (skipped)."""
    if "oldSelf" in rule and old is None:
        return None  # a transition rule: only on updates
    try:
        from celpy import adapter, celtypes

        program = _cel_program(rule)
        activation: dict[str, Any] = {"self": adapter.json_to_cel(value)}
        if old is not None:
            activation["oldSelf"] = adapter.json_to_cel(old)
        result = program.evaluate(activation)
    except Exception:
        return None
    if isinstance(result, celtypes.BoolType):
        return bool(result)
    return None


def validate(
    obj: dict[str, Any], schema: dict[str, Any], old: dict[str, Any] | None
) -> list[Cause]:
    """All field errors of ``obj`` against a CRD version's ``openAPIV3Schema``."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    root = dict(schema)
    props = {
        k: v
        for k, v in (schema.get("properties") or {}).items()
        if k not in ("apiVersion", "kind", "metadata")
    }
    root["properties"] = props
    validator = jsonschema.Draft4Validator(to_json_schema(root))
    causes = [
        _cause(e)
        for e in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    ]
    causes += _list_causes(body, root, [])
    causes += _name_causes(obj, schema)
    if not causes:
        causes += _cel_causes(_cel_root(obj), _cel_root(old) if old else None, root, [])
    return causes


def _name_causes(obj: dict[str, Any], schema: dict[str, Any]) -> list[Cause]:
    """A CRD may constrain ``metadata.name`` (pattern, maxLength), as the API server checks."""
    meta = (schema.get("properties") or {}).get("metadata") or {}
    rule = (meta.get("properties") or {}).get("name")
    name = (obj.get("metadata") or {}).get("name")
    if not rule or not isinstance(name, str):
        return []
    validator = jsonschema.Draft4Validator(to_json_schema(rule))
    return [
        Cause("metadata.name", "FieldValueInvalid", f"Invalid value: {name!r}: {e.message}")
        for e in validator.iter_errors(name)
    ]


def _cel_root(obj: dict[str, Any]) -> dict[str, Any]:
    """The root ``self`` of CEL rules: metadata is reduced to name and generateName."""
    out = dict(obj)
    meta = obj.get("metadata") or {}
    out["metadata"] = {k: meta[k] for k in ("name", "generateName") if k in meta}
    return out
