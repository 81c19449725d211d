"""Patch formats the API server accepts: JSON merge-patch, JSON-patch, strategic merge-patch.

Strategic merge-patch is approximated: maps merge like a merge-patch, lists of objects merge
by a guessed merge key (``name``, ``containerPort``, ``port``, ``mountPath``, ``type``) when
every element of both lists carries it, ``$patch: delete`` / ``$setElementOrder`` /
``$retainKeys`` / ``$deleteFromPrimitiveList`` directives are honoured or dropped. That is what
client-side ``kubectl apply`` sends; server-side apply is refused by the server.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_KEYS = ("name", "containerPort", "port", "mountPath", "devicePath", "type", "ip")


class PatchError(Exception):
    """A patch that cannot be applied (bad document, bad pointer)."""


class PatchTestError(PatchError):
    """A JSON-patch ``test`` operation did not match."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``null`` deletes, maps merge recursively, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if token == "-" and for_add:
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    limit = len(container) if for_add else len(container) - 1
    if index > limit:
        raise PatchError(f"array index {index} out of range")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path element {token!r} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, for_add=False)]
        else:
            raise PatchError(f"cannot descend into a scalar at {token!r}")
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise PatchError(f"path {path!r} does not exist")


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, for_add=False))
    raise PatchError(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any, *, replace: bool) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"path {path!r} does not exist")
        parent[last] = value
    elif isinstance(parent, list):
        if replace:
            parent[_index(parent, last, for_add=False)] = value
        else:
            parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f"path {path!r} does not exist")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 on a deep copy: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise PatchError("a JSON-patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON-patch operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "test":
            actual = _get(doc, path)
            if actual != op.get("value"):
                raise PatchTestError(
                    f"the test operation at {path!r} failed: expected {op.get('value')!r},"
                    f" found {actual!r}"
                )
        elif kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")), replace=False)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value, replace=False)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])), replace=False)
        else:
            raise PatchError(f"unknown JSON-patch operation {kind!r}")
    return doc


def _merge_key(current: list[Any], patch: list[Any]) -> str | None:
    items = [i for i in current + patch if isinstance(i, dict)]
    if not items or len(items) != len(current) + len(patch):
        return None
    for key in MERGE_KEYS:
        if all(key in i for i in items):
            return key
    return None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """An approximation of Kubernetes' strategic merge-patch (see the module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_lists(result[key], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    for field, order in orders.items():
        current = result.get(field)
        if not isinstance(current, list):
            continue
        key = _merge_key(current, [o for o in order if isinstance(o, dict)])
        if key is None:
            continue
        rank = {o.get(key): n for n, o in enumerate(order) if isinstance(o, dict)}
        current.sort(key=lambda item: rank.get(item.get(key), len(rank)))
    return result


def _merge_lists(current: list[Any], patch: list[Any]) -> list[Any]:
    key = _merge_key(current, [p for p in patch if not (isinstance(p, dict) and "$patch" in p)])
    if key is None:
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and p.get("$patch"))]
    merged = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            continue
        found = next((n for n, m in enumerate(merged) if m.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if found is not None:
                merged.pop(found)
        elif found is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[found] = strategic_merge_patch(merged[found], item)
    return merged
