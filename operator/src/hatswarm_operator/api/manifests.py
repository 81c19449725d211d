"""Read EdgeModel and InferencePool manifests from files and folders, with clear errors.

The same parsing serves `hatswarm validate`, `hatswarm up` (local mode) and the operator, so a
manifest that one accepts, all accept.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import API_VERSION, DNS_1035_LABEL, DNS_LABEL

KINDS: dict[str, type[EdgeModel] | type[InferencePool]] = {
    "EdgeModel": EdgeModel,
    "InferencePool": InferencePool,
}


class ManifestError(ValueError):
    """A manifest is not a valid hatswarm object; the message names file, object and field."""


@dataclass
class ManifestSet:
    pools: list[InferencePool] = field(default_factory=list)
    models: list[EdgeModel] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)


def describe_errors(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """pydantic errors as `spec.replicas.min: 4 must be ...` lines, like the API server's 422:
    the field, the offending value, the rule, and for an unknown field the closest known one
    (`model` is the top-level type, for those suggestions)."""
    lines = []
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif not str(part).startswith("function-"):
                path += f".{part}" if path else str(part)
        lines.append(f"{path}: {_explain(e, model)}" if path else _explain(e, model))
    return "; ".join(lines)


# Patterns users meet, by name: "must be a DNS-1035 label" says more than the regex.
_PATTERNS = {
    DNS_1035_LABEL: "a DNS-1035 label (a lowercase letter first, then lowercase letters, digits "
    "or '-', ending with a letter or digit)",
    DNS_LABEL: "a DNS-1123 label (lowercase letters, digits or '-', starting and ending with a "
    "letter or digit)",
    r"^[a-f0-9]{64}$": "64 lowercase hex characters (a sha256 digest)",
}
_RULE_PREFIXES = (
    ("Value error, ", ""),
    ("Input should be ", "must be "),
    ("String should ", "must "),
    ("List should ", "must "),
    ("Dictionary should ", "must "),
    ("Input should ", "must "),
)


def _explain(e: ErrorDetails, model: type[BaseModel] | None) -> str:
    kind = e["type"]
    if kind == "extra_forbidden":
        key = str(e["loc"][-1])
        known = _field_names(model, e["loc"][:-1]) if model else []
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            return f"unknown field {key!r}: did you mean `{close[0]}`?"
        return f"unknown field {key!r}" + (f" (fields: {', '.join(known)})" if known else "")
    if kind == "missing":
        return "required field is missing"
    rule = e["msg"]
    for prefix, replacement in _RULE_PREFIXES:
        if rule.startswith(prefix):
            rule = replacement + rule[len(prefix) :]
            break
    pattern = (e.get("ctx") or {}).get("pattern")
    if kind == "string_pattern_mismatch" and pattern in _PATTERNS:
        rule = f"must be {_PATTERNS[pattern]}"
    if kind == "value_error":  # our validators name the values themselves
        return rule
    value = e.get("input")
    shown = _show(value)
    if kind == "string_too_long" and isinstance(value, str):
        shown += f" ({len(value)} characters)"
    return f"{shown} {rule}"


def _show(value: Any) -> str:
    """An offending value as the user wrote it, shortened."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, str):
        text = repr(value if len(value) <= 70 else value[:67] + "...")
    else:
        text = json.dumps(value, default=str, separators=(",", ":"))
        text = text if len(text) <= 70 else text[:67] + "..."
    return text


def _field_names(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The wire names of the fields of the object at `loc` (empty when it is not a model)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            current = _element(current)
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = next(
            (f for n, f in current.model_fields.items() if part in (n, f.alias)),
            None,
        )
        if field is None:
            return []
        current = _model_of(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _model_of(annotation: Any) -> Any:
    """The model (or list of models) inside `X | None`."""
    if get_origin(annotation) in (Union, UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return _model_of(options[0]) if len(options) == 1 else annotation
    return annotation


def _element(annotation: Any) -> Any:
    args = get_args(annotation)
    return _model_of(args[0]) if get_origin(annotation) is list and args else None


def parse_object(obj: dict[str, Any], source: str = "<manifest>") -> EdgeModel | InferencePool:
    kind = obj.get("kind")
    if kind not in KINDS:
        raise ManifestError(f"{source}: kind {kind!r} is not one of {sorted(KINDS)}")
    if obj.get("apiVersion") != API_VERSION:
        raise ManifestError(
            f"{source}: apiVersion must be {API_VERSION}, got {obj.get('apiVersion')!r}"
        )
    name = (obj.get("metadata") or {}).get("name", "?")
    try:
        return KINDS[kind].model_validate(obj)
    except ValidationError as err:
        raise ManifestError(
            f"{source}: {kind}/{name}: {describe_errors(err, KINDS[kind])}"
        ) from err


STDIN = Path("-")  # `-f -` reads the manifests from standard input, as kubectl does


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p == STDIN:
            yield p
        elif p.is_dir():
            yield from sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml"))
        elif p.exists():
            yield p
        else:
            raise ManifestError(f"cannot read {p}: no such file or directory")


def load(paths: Iterable[str | Path], kinds: Iterable[str] = KINDS) -> ManifestSet:
    """Parse every document of every file (folders: their *.yaml, not recursive).

    Only documents of `kinds` are parsed (and must be valid); the rest land in `others`.
    """
    wanted = set(kinds)
    out = ManifestSet()
    for path in iter_files(paths):
        try:
            text = sys.stdin.read() if path == STDIN else path.read_text()
            docs = [d for d in yaml.safe_load_all(text) if d]
        except OSError as err:
            raise ManifestError(f"cannot read {path}: {err.strerror or err}") from err
        except yaml.YAMLError as err:
            raise ManifestError(f"{path}: not YAML: {err}") from err
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict):
                raise ManifestError(f"{path}: document {i} is not a mapping")
            if doc.get("kind") not in wanted:
                out.others.append(doc)
                continue
            obj = parse_object(doc, f"{path}#{i}")
            if isinstance(obj, InferencePool):
                out.pools.append(obj)
            else:
                out.models.append(obj)
    return out
