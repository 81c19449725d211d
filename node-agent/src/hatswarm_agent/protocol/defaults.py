"""Defaults both sides must agree on, defined once.

Routing: an InferencePool that leaves `spec.routing` out, a static `--routing-table` that leaves
these fields out, and an agent started without a table all mean the same numbers. Adapter
slots: what an agent holds when a LoadModel sets no `adapter_slots`, which the operator's
adapter spread plans with. No imports: the operator's API types read them.
"""

from __future__ import annotations

ROUTE_QUEUE_LIMIT = 64  # requests per replica before it counts as full
ROUTE_RETRIES = 2  # other replicas tried after a failure
ROUTE_TIMEOUT_MS = 5000  # a request's whole budget across hops

ADAPTER_SLOTS = 4  # LoRA adapters resident per model version (LoadModel option adapter_slots)

# Status streams (WatchNodeStatus): the control plane pings each watched agent's connection
# every KEEPALIVE_TIME_MS (HTTP/2 PING, answered by gRPC's core without Python), so a dead,
# frozen or powered-off node shows as a broken stream within time + timeout. The agent's
# server must allow pings that often, with no call in flight too (gRPC's default refuses a
# ping more often than every 5 minutes and closes the connection after two such strikes).
KEEPALIVE_TIME_MS = 1000
KEEPALIVE_TIMEOUT_MS = 1000
KEEPALIVE_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.http2.max_pings_without_data", 0),
)
