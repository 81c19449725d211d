"""Validate a manifest against a generated CRD the way the API server would, offline.

`kubectl apply --dry-run=server` needs a cluster; this does the same three checks: the
OpenAPI schema (jsonschema), strict field validation (unknown fields are errors, as kubectl's
default `--validate=strict` asks), list-map key uniqueness, and the CEL rules (cel-python).
Every error names the field path, like the API server's 422 message.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parents[4] / "crds"


def crd_schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return out


def _fmt(path: list[str | int]) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


def _walk(schema: dict[str, Any], obj: Any, path: list[str | int], errors: list[str]) -> None:
    for rule in schema.get("x-kubernetes-validations", []):
        env = celpy.Environment()
        program = env.program(env.compile(rule["rule"]))
        try:
            ok = program.evaluate({"self": celpy.json_to_cel(obj)})
        except celpy.CELEvalError as err:  # a rule that cannot evaluate is a failure too
            ok = False
            rule = {**rule, "message": f"{rule['message']} ({err})"}
        if not bool(ok):
            where = _fmt(path) + rule.get("fieldPath", "")
            errors.append(f"{where}: Invalid value: {rule['message']}")
    if isinstance(obj, dict):
        props = schema.get("properties")
        # metadata is ObjectMeta: the API server checks it, a CRD only constrains its name.
        strict = path != ["metadata"] and not schema.get("x-kubernetes-preserve-unknown-fields")
        if props is not None and strict:
            for key in obj:
                if key not in props:
                    errors.append(f"{_fmt([*path, key])}: unknown field")
        for key, value in obj.items():
            sub = (props or {}).get(key) or (
                schema.get("additionalProperties")
                if isinstance(schema.get("additionalProperties"), dict)
                else None
            )
            if sub is not None:
                _walk(sub, value, [*path, key], errors)
    elif isinstance(obj, list) and "items" in schema:
        keys = schema.get("x-kubernetes-list-map-keys")
        if schema.get("x-kubernetes-list-type") == "map" and keys:
            seen = set()
            for i, item in enumerate(obj):
                k = tuple(item.get(x) for x in keys) if isinstance(item, dict) else (item,)
                if k in seen:
                    errors.append(
                        f"{_fmt([*path, i])}: Duplicate value: {dict(zip(keys, k, strict=True))}"
                    )
                seen.add(k)
        for i, item in enumerate(obj):
            _walk(schema["items"], item, [*path, i], errors)


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Fill defaults the way the API server does before it validates (objects that exist)."""
    if isinstance(obj, dict):
        out = dict(obj)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(sub, out[key])
        return out
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in obj]
    return obj


def _message(e: jsonschema.ValidationError) -> str:
    path = list(e.absolute_path)
    if e.validator == "required":
        missing = re.match(r"'([^']+)'", e.message)
        return f"{_fmt([*path, missing.group(1)]) if missing else _fmt(path)}: Required value"
    return f"{_fmt(path)}: {e.message}"


def validate(obj: dict[str, Any]) -> list[str]:
    """All errors for one manifest (empty when the API server would accept it)."""
    schema = crd_schemas()[obj["kind"]]
    obj = apply_defaults(schema, obj)
    errors = [_message(e) for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    _walk(schema, obj, [], errors)
    return errors
