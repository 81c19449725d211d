"""Routing defaults, defined once: the InferencePool API, static tables and the agent's flags.

An InferencePool that leaves `spec.routing` out, a static `--routing-table` that leaves these
fields out, and an agent started without a table all mean the same numbers. No imports: the
operator's API types read them.
"""

from __future__ import annotations

ROUTE_QUEUE_LIMIT = 64  # requests per replica before it counts as full
ROUTE_RETRIES = 2  # other replicas tried after a failure
ROUTE_TIMEOUT_MS = 5000  # a request's whole budget across hops
