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
