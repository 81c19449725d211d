"""The routing table: the one the operator pushes, and static ones for standalone use
(`--routing-table FILE`, `--peer MODEL=HOST:PORT[,weight]`).

policy.py compiles it into decisions; the dispatcher (dispatcher.py) carries them out.

A pushed table steers where every request (and its inputs) goes, so `validate_pushed` checks it
before it is adopted: its generation within bounds (generations are the control plane's
millisecond clock, so one far beyond the agent's clock would pin a table forever), every
endpoint an announced pool member (`members`), the cloud token named from the agent's own
`--cloud-token NAME=FILE` (never a file path from the table), every number in range. A static
table is the agent's own configuration and is trusted as given.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from hatswarm_agent.protocol.defaults import ROUTE_QUEUE_LIMIT, ROUTE_RETRIES, ROUTE_TIMEOUT_MS
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.policy import ADAPTER_POLICIES, POLICIES
from hatswarm_agent.serving.errors import InvalidInputError

# What a static table means when it leaves them out (the InferencePool's defaults).
TABLE_DEFAULTS = {
    "queue_limit": ROUTE_QUEUE_LIMIT,
    "retries": ROUTE_RETRIES,
    "timeout_ms": ROUTE_TIMEOUT_MS,
}


MAX_GENERATION_AHEAD_MS = 24 * 3600 * 1000
"""How far past the agent's own clock (in ms) a pushed generation may be."""
MAX_ROUTES = 4096
MAX_ENDPOINTS = 1024
MAX_MEMBERS = 4096
MAX_TEXT = 253
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}")


class TableRefusedError(InvalidInputError):
    """A pushed routing table that fails validation (INVALID_ARGUMENT; the old table stays)."""


def _number(what: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise TableRefusedError(f"{what}={value} is out of range: {low:g} to {high:g}")


def _text(what: str, value: str, limit: int = MAX_TEXT) -> None:
    if len(value) > limit:
        raise TableRefusedError(f"{what} is {len(value)} characters, over the limit of {limit}")


def _address(what: str, value: str) -> None:
    _text(what, value)
    if not _ADDRESS.fullmatch(value):
        raise TableRefusedError(f"{what} {value[:64]!r} is not HOST:PORT")


def validate_pushed(
    table: control_pb2.RoutingTable,
    *,
    now_ms: int | None = None,
    cloud_tokens: Collection[str] = (),
) -> None:
    """TableRefusedError naming the first thing wrong with a table the control plane pushed."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    limit = now_ms + MAX_GENERATION_AHEAD_MS
    if not 1 <= table.generation <= limit:
        raise TableRefusedError(
            f"generation {table.generation} is out of bounds: 1 to {limit} (the agent's clock "
            f"in ms + {MAX_GENERATION_AHEAD_MS // 3_600_000} h)"
        )
    if len(table.members) > MAX_MEMBERS:
        raise TableRefusedError(f"{len(table.members)} members, over the limit of {MAX_MEMBERS}")
    members: dict[str, str] = {}
    for m in table.members:
        _address("member address", m.address)
        _text("member node", m.node)
        members[m.address] = m.node
    if len(table.routes) > MAX_ROUTES:
        raise TableRefusedError(f"{len(table.routes)} routes, over the limit of {MAX_ROUTES}")
    for route in table.routes:
        where = f"route {route.model[:64]}"
        _text(f"{where}: model", route.model)
        _text(f"{where}: version", route.version)
        _number(f"{where}: weight", route.weight, 0, 1e9)
        _number(f"{where}: cache_ttl_seconds", route.cache_ttl_seconds, 0, 86_400 * 30)
        _number(f"{where}: escalation_threshold", route.escalation_threshold, 0, 1)
        _text(f"{where}: escalation_output", route.escalation_output)
        _text(f"{where}: escalation_model", route.escalation_model)
        if len(route.endpoints) > MAX_ENDPOINTS:
            raise TableRefusedError(
                f"{where}: {len(route.endpoints)} endpoints, over the limit of {MAX_ENDPOINTS}"
            )
        for ep in route.endpoints:
            _text(f"{where}: endpoint node", ep.node)
            _number(f"{where}: endpoint weight", ep.weight, 0, 1e9)
            if not ep.address:
                continue
            _address(f"{where}: endpoint", ep.address)
            if ep.address not in members:
                raise TableRefusedError(
                    f"{where}: endpoint {ep.address} is not an announced pool member "
                    "(RoutingTable.members)"
                )
            if ep.node and members[ep.address] and ep.node != members[ep.address]:
                raise TableRefusedError(
                    f"{where}: endpoint {ep.address} is member {members[ep.address]!r}, "
                    f"not {ep.node[:64]!r}"
                )
    cloud = table.cloud
    if cloud.token_file:
        raise TableRefusedError(
            "cloud.token_file cannot come from a pushed table: name a token the agent was "
            "started with (cloud.token_name, --cloud-token NAME=FILE)"
        )
    if cloud.token_name and cloud.token_name not in cloud_tokens:
        known = ", ".join(sorted(cloud_tokens)) or "none"
        raise TableRefusedError(
            f"cloud.token_name {cloud.token_name[:64]!r} is not a token this agent was started "
            f"with (--cloud-token NAME=FILE; known: {known})"
        )
    if cloud.endpoint:
        _address("cloud.endpoint", cloud.endpoint)
    _number("cloud.max_share", cloud.max_share, 0, 1)
    _number("cloud.price_per_1k_usd", cloud.price_per_1k_usd, 0, 1e6)
    _number("queue_limit", table.queue_limit, 0, 1_000_000)
    _number("retries", table.retries, 0, 10)
    _number("timeout_ms", table.timeout_ms, 0, 600_000)
    if table.hedge_after_percentile:
        _number("hedge_after_percentile", table.hedge_after_percentile, 50, 100)
    if table.policy and table.policy not in POLICIES:
        raise TableRefusedError(f"policy {table.policy[:64]!r}: expected one of {POLICIES}")
    if table.adapter_policy and table.adapter_policy not in ADAPTER_POLICIES:
        raise TableRefusedError(
            f"adapter_policy {table.adapter_policy[:64]!r}: expected one of {ADAPTER_POLICIES}"
        )


class RoutingTableStore:
    """Keeps the newest routing table; older generations are ignored."""

    def __init__(
        self,
        table: control_pb2.RoutingTable | None = None,
        *,
        cloud_tokens: Collection[str] = (),
    ) -> None:
        """`table`: the static one (agent flags); `cloud_tokens`: the names of the cloud
        tokens the agent was started with, the only ones a pushed table may name."""
        self.table = table if table is not None else control_pb2.RoutingTable()
        self.cloud_tokens = frozenset(cloud_tokens)

    def push(self, table: control_pb2.RoutingTable) -> int:
        """A table from the control plane: validated (TableRefusedError), then `set`."""
        validate_pushed(table, cloud_tokens=self.cloud_tokens)
        return self.set(table)

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


def load_table_file(path: Path) -> control_pb2.RoutingTable:
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
    return table_from_dict(data, str(path))


def table_from_dict(data: dict[str, Any], origin: str = "table") -> control_pb2.RoutingTable:
    table = control_pb2.RoutingTable()
    try:
        json_format.ParseDict(data, table)
    except json_format.ParseError as exc:
        raise TableFileError(f"{origin}: {exc}") from exc
    camel = {"queue_limit": "queueLimit", "retries": "retries", "timeout_ms": "timeoutMs"}
    for key, default in TABLE_DEFAULTS.items():
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
    path: Path | None, peers: list[control_pb2.Route]
) -> control_pb2.RoutingTable | None:
    """The table from --routing-table plus --peer endpoints (merged into matching routes)."""
    if path is None and not peers:
        return None
    table = load_table_file(path) if path is not None else table_from_dict({})
    for peer in peers:
        for route in table.routes:
            if route.model == peer.model and route.version == peer.version:
                route.endpoints.extend(peer.endpoints)
                break
        else:
            table.routes.append(peer)
    return table
