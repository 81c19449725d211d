"""Read EdgeModel and InferencePool manifests from files and folders, with clear errors.

The same parsing serves `hatswarm validate`, `hatswarm up` (local mode) and the operator, so a
manifest that one accepts, all accept.
"""

from __future__ import annotations

import sys
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
