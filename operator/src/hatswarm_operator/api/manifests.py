"""Read EdgeModel and InferencePool manifests from files and folders, with clear errors.

The same parsing serves `hatswarm validate`, `hatswarm up` (local mode) and the operator, so a
manifest that one accepts, all accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import API_VERSION

KINDS: dict[str, type[EdgeModel] | type[InferencePool]] = {
    "EdgeModel": EdgeModel,
    "InferencePool": InferencePool,
}


class ManifestError(ValueError):
    """A manifest is not a valid hatswarm object; the message names file, object and field."""


# Deeper documents are refused (nothing hatswarm reads nests beyond a dozen levels; the API
# server caps nesting too), before validation could recurse through them.
MAX_DEPTH = 64

_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """Safe YAML, with libyaml's parser when PyYAML has it (several times faster than the
    pure-Python one), refusing a key given twice in one mapping as kubectl does (PyYAML's
    default silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<` merges may override on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: the base constructor reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {first + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _too_deep(doc: object) -> bool:
    """Whether `doc` nests deeper than MAX_DEPTH (checked without recursion)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def read_documents(path: Path) -> list[Any]:
    """The non-empty YAML documents of one file; ManifestError naming the file otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ManifestError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
        ) from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d]
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not YAML: {err}") from err
    except RecursionError:
        raise ManifestError(f"{path}: nested deeper than {MAX_DEPTH} levels") from None
    for i, doc in enumerate(docs):
        if _too_deep(doc):
            raise ManifestError(f"{path}: document {i} is nested deeper than {MAX_DEPTH} levels")
    return docs


@dataclass
class ManifestSet:
    pools: list[InferencePool] = field(default_factory=list)
    models: list[EdgeModel] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)


def describe_errors(err: ValidationError) -> str:
    """pydantic errors as `spec.replicas.min: message` lines, like the API server's 422."""
    lines = []
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif not str(part).startswith("function-"):
                path += f".{part}" if path else str(part)
        lines.append(f"{path}: {e['msg']}")
    return "; ".join(lines)


def parse_object(obj: dict[str, Any], source: str = "<manifest>") -> EdgeModel | InferencePool:
    kind = obj.get("kind")
    if kind not in KINDS:
        raise ManifestError(f"{source}: kind {kind!r} is not one of {sorted(KINDS)}")
    if obj.get("apiVersion") != API_VERSION:
        raise ManifestError(f"{source}: apiVersion must be {API_VERSION}")
    name = (obj.get("metadata") or {}).get("name", "?")
    try:
        return KINDS[kind].model_validate(obj)
    except ValidationError as err:
        raise ManifestError(f"{source}: {kind}/{name}: {describe_errors(err)}") from err


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
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
        docs = read_documents(path)
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
