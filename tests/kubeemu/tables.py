"""Server-side printing: meta.k8s.io/v1 Tables for ``kubectl get``.

CRDs print their ``additionalPrinterColumns`` (a JSONPath subset: ``.a.b``, ``.a[0]``,
``.a[*].b``, ``.a[?(@.k=="v")].b``); built-in kinds print Name, a few kind-specific columns
and Age.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-/]+)
      | \[(?P<index>-?\d+|\*)\]
      | \[\?\(@\.(?P<fkey>[A-Za-z0-9_.\-]+)\s*(?P<fop>==|!=)\s*(?P<fval>"[^"]*"|'[^']*'|[^)]*)\)\]
    """,
    re.VERBOSE,
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Every match of a simple JSONPath (``{...}`` braces optional) in ``obj``."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    nodes: list[Any] = [obj]
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None:
            return []
        pos = match.end()
        nxt: list[Any] = []
        for node in nodes:
            if match.group("field") is not None:
                if isinstance(node, dict) and match.group("field") in node:
                    nxt.append(node[match.group("field")])
            elif match.group("index") is not None:
                if not isinstance(node, list):
                    continue
                if match.group("index") == "*":
                    nxt.extend(node)
                else:
                    n = int(match.group("index"))
                    if -len(node) <= n < len(node):
                        nxt.append(node[n])
            else:
                if not isinstance(node, list):
                    continue
                want = match.group("fval").strip()
                if want[:1] in "\"'":
                    want = want[1:-1]
                for item in node:
                    got = jsonpath(item, "." + match.group("fkey"))
                    same = bool(got) and str(got[0]) == want
                    if same == (match.group("fop") == "=="):
                        nxt.append(item)
        nodes = nxt
    return nodes


def age(timestamp: str | None) -> str:
    """Kubernetes' short human duration (``5s``, ``3m``, ``2h``, ``4d``)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _condition(obj: dict[str, Any], kind: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def _pod_ready(obj: dict[str, Any]) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_restarts(obj: dict[str, Any]) -> int:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def _node_status(obj: dict[str, Any]) -> str:
    ready = _condition(obj, "Ready")
    text = "Ready" if ready == "True" else "NotReady" if ready else "Unknown"
    if (obj.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_roles(obj: dict[str, Any]) -> str:
    prefix = "node-role.kubernetes.io/"
    labels = (obj.get("metadata") or {}).get("labels") or {}
    roles = sorted(k[len(prefix) :] for k in labels if k.startswith(prefix))
    return ",".join(roles) or "<none>"


def _st(obj: dict[str, Any], key: str, default: Any = 0) -> Any:
    return (obj.get("status") or {}).get(key, default)


def _sp(obj: dict[str, Any], key: str, default: Any = 0) -> Any:
    return (obj.get("spec") or {}).get(key, default)


Printer = tuple[str, str, Callable[[dict[str, Any]], Any]]

BUILTIN_COLUMNS: dict[str, list[Printer]] = {
    "Pod": [
        ("Ready", "string", _pod_ready),
        ("Status", "string", lambda o: _st(o, "phase", "Pending")),
        ("Restarts", "integer", _pod_restarts),
        ("Node", "string", lambda o: _sp(o, "nodeName", "<none>")),
    ],
    "Node": [
        ("Status", "string", _node_status),
        ("Roles", "string", _node_roles),
        ("Version", "string", lambda o: (_st(o, "nodeInfo", {}) or {}).get("kubeletVersion", "")),
    ],
    "Namespace": [("Status", "string", lambda o: _st(o, "phase", "Active"))],
    "Deployment": [
        ("Ready", "string", lambda o: f"{_st(o, 'readyReplicas')}/{_sp(o, 'replicas', 1)}"),
        ("Up-to-date", "integer", lambda o: _st(o, "updatedReplicas")),
        ("Available", "integer", lambda o: _st(o, "availableReplicas")),
    ],
    "DaemonSet": [
        ("Desired", "integer", lambda o: _st(o, "desiredNumberScheduled")),
        ("Current", "integer", lambda o: _st(o, "currentNumberScheduled")),
        ("Ready", "integer", lambda o: _st(o, "numberReady")),
    ],
    "Service": [
        ("Type", "string", lambda o: _sp(o, "type", "ClusterIP")),
        ("Cluster-IP", "string", lambda o: _sp(o, "clusterIP", "<none>")),
    ],
    "ConfigMap": [("Data", "integer", lambda o: len(o.get("data") or {}))],
    "Secret": [
        ("Type", "string", lambda o: o.get("type", "Opaque")),
        ("Data", "integer", lambda o: len(o.get("data") or {})),
    ],
    "Event": [
        ("Type", "string", lambda o: o.get("type", "")),
        ("Reason", "string", lambda o: o.get("reason", "")),
        ("Message", "string", lambda o: o.get("message") or o.get("note", "")),
    ],
    "Lease": [("Holder", "string", lambda o: _sp(o, "holderIdentity", ""))],
}


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def build_table(
    kind: str,
    objects: list[dict[str, Any]],
    printer_columns: list[dict[str, Any]] | None,
    *,
    is_custom: bool,
    resource_version: str,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of ``objects`` (columns from the CRD or the built-in printers)."""
    definitions: list[dict[str, Any]] = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}
    ]
    cells: list[Callable[[dict[str, Any]], Any]] = [lambda o: o["metadata"]["name"]]
    if kind == "CustomResourceDefinition":
        definitions.append(
            {"name": "Created At", "type": "date", "format": "", "description": "", "priority": 0}
        )
        cells.append(lambda o: o["metadata"].get("creationTimestamp"))
        columns = []
    elif is_custom:
        columns = printer_columns or [
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]
    else:
        columns = []
        for name, type_, fn in BUILTIN_COLUMNS.get(kind, []):
            definitions.append(
                {"name": name, "type": type_, "format": "", "description": name, "priority": 0}
            )
            cells.append(fn)
        definitions.append(
            {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}
        )
        cells.append(lambda o: age(o["metadata"].get("creationTimestamp")))
    for column in columns:
        definitions.append(
            {
                "name": column["name"],
                "type": column.get("type", "string"),
                "format": column.get("format", ""),
                "description": column.get("description", ""),
                "priority": column.get("priority", 0),
            }
        )
        cells.append(_column_cell(column))
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [fn(obj) for fn in cells]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }


def _column_cell(column: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    path = column.get("jsonPath", "")
    is_string = column.get("type", "string") == "string"
    is_date = column.get("type") == "date"

    def cell(obj: dict[str, Any]) -> Any:
        found = jsonpath(obj, path)
        if not found:
            return None
        value = found[0]
        if is_date and isinstance(value, str):
            return age(value)  # the real server prints dates as ages, too
        if is_string and not isinstance(value, str):
            if isinstance(value, bool):
                return str(value).lower()
            return str(value) if not isinstance(value, dict | list) else _go_json(value)
        return value

    return cell


def _go_json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))
