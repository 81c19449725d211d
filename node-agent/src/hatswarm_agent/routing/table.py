"""The routing table: the one the operator pushes, and static ones for standalone use
(`--routing-table FILE`, `--peer MODEL=HOST:PORT[,weight]`).

policy.py compiles it into decisions; the dispatcher (dispatcher.py) carries them out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from hatswarm_agent.protocol.defaults import ROUTE_QUEUE_LIMIT, ROUTE_RETRIES, ROUTE_TIMEOUT_MS
from hatswarm_agent.protocol.v1 import control_pb2

# What a static table means when it leaves them out (the InferencePool's defaults).
TABLE_DEFAULTS = {
    "queue_limit": ROUTE_QUEUE_LIMIT,
    "retries": ROUTE_RETRIES,
    "timeout_ms": ROUTE_TIMEOUT_MS,
}


class RoutingTableStore:
    """Keeps the newest routing table; older generations are ignored."""

    def __init__(self, table: control_pb2.RoutingTable | None = None) -> None:
        self.table = table if table is not None else control_pb2.RoutingTable()
        self.static = table  # the agent's own (--routing-table, --peer): pushes merge over it

    @property
    def generation(self) -> int:
        return self.table.generation

    def set(self, table: control_pb2.RoutingTable) -> int:
        """Adopt `table` unless it is older than the current one; returns the current generation."""
        if table.generation >= self.table.generation:
            self.table = table
        return self.table.generation


class TableFileError(ValueError):
    """A static routing table or --peer flag that cannot be used."""


def load_table_file(path: Path, defaults: dict[str, int] | None = None) -> control_pb2.RoutingTable:
    """A RoutingTable from JSON or YAML (snake_case or camelCase fields), defaults filled in."""
    text = path.read_text()
    data: object
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # optional: only static YAML tables need it
        except ImportError as exc:
            raise TableFileError(f"{path}: YAML tables need PyYAML (or use JSON)") from exc
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TableFileError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TableFileError(f"{path}: a routing table is a mapping of RoutingTable fields")
    return table_from_dict(data, str(path), defaults)


def table_from_dict(
    data: dict[str, Any], origin: str = "table", defaults: dict[str, int] | None = None
) -> control_pb2.RoutingTable:
    """`defaults` (the agent's --timeout-ms, --retries) fill what the table leaves out."""
    table = control_pb2.RoutingTable()
    try:
        json_format.ParseDict(data, table)
    except json_format.ParseError as exc:
        raise TableFileError(f"{origin}: {exc}") from exc
    camel = {"queue_limit": "queueLimit", "retries": "retries", "timeout_ms": "timeoutMs"}
    for key, default in {**TABLE_DEFAULTS, **(defaults or {})}.items():
        if key not in data and camel[key] not in data:
            setattr(table, key, default)
    return table


def parse_peer(spec: str) -> control_pb2.Route:
    """MODEL[:VERSION]=HOST:PORT[,WEIGHT] to a one-endpoint Route."""
    model, sep, rest = spec.partition("=")
    address, _, weight_text = rest.partition(",")
    if not sep or not model or ":" not in address:
        raise TableFileError(f"--peer wants MODEL=HOST:PORT[,weight], got {spec!r}")
    model, _, version = model.partition(":")
    try:
        weight = float(weight_text) if weight_text else 1.0
    except ValueError as exc:
        raise TableFileError(f"--peer weight must be a number, got {weight_text!r}") from exc
    if not weight > 0:
        raise TableFileError(f"--peer weight must be > 0, got {weight_text!r}")
    return control_pb2.Route(
        model=model,
        version=version,
        endpoints=[control_pb2.Endpoint(node=address, address=address, weight=weight)],
    )


def static_table(
    path: Path | None, peers: list[control_pb2.Route], defaults: dict[str, int] | None = None
) -> control_pb2.RoutingTable | None:
    """The table from --routing-table plus --peer endpoints (merged into matching routes).

    `defaults` are the agent's flags (--timeout-ms, --retries): what the file sets wins,
    then the flags, then the pool's defaults.
    """
    if path is None and not peers:
        return None
    table = (
        load_table_file(path, defaults)
        if path is not None
        else table_from_dict({}, "table", defaults)
    )
    for peer in peers:
        for route in table.routes:
            if route.model == peer.model and route.version == peer.version:
                route.endpoints.extend(peer.endpoints)
                break
        else:
            table.routes.append(peer)
    return table


def merge_static(
    pushed: control_pb2.RoutingTable, static: control_pb2.RoutingTable | None
) -> control_pb2.RoutingTable:
    """What an agent with its own static table routes by once a table is pushed.

    The pushed routes for the models it routes, the static routes (--peer, --routing-table)
    for the models it does not mention: an empty push keeps a gateway's --peer routes. The
    pushed settings win; a pushed table without a timeout, policy or cloud endpoint keeps the
    static one's.
    """
    if static is None or pushed is static:
        return pushed
    out = control_pb2.RoutingTable()
    out.CopyFrom(pushed)
    routed = {r.model for r in pushed.routes}
    out.routes.extend(r for r in static.routes if r.model not in routed)
    if not out.timeout_ms:
        out.timeout_ms = static.timeout_ms
    if not out.policy:
        out.policy = static.policy
    if not out.adapter_policy:
        out.adapter_policy = static.adapter_policy
    if not out.cloud.endpoint and static.cloud.endpoint:
        out.cloud.CopyFrom(static.cloud)
    return out
