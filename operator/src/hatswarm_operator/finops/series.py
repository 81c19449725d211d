"""The Prometheus series the FinOps reports query, named once.

The agents export theirs (`hatswarm_agent.serving.metrics.METRIC_NAMES`), the operator its
cost series (`finops.metrics.METRIC_NAMES`); a test checks every name here against those
lists, so a renamed metric breaks the build, not a report.
"""

from __future__ import annotations

# --- exported by every agent -------------------------------------------------------------------
REQUEST_SUCCESS = "hatswarm_inference_request_success_total"
REQUEST_FAILURE = "hatswarm_inference_request_failure_total"
"""Labelled ``reason``; a request the agent could not route has no ``model``."""
INFERENCES = "hatswarm_inference_count_total"
REQUEST_DURATION = "hatswarm_inference_request_duration_seconds"
"""A histogram: query its ``_bucket`` series."""
MODELS_LOADED = "hatswarm_models_loaded"
COMPUTE_SECONDS = "hatswarm_model_compute_seconds_total"
ENERGY_JOULES = "hatswarm_model_energy_joules_total"
NPU_POWER = "hatswarm_npu_power_watts"
ROUTE_REQUESTS = "hatswarm_route_requests_total"
REQUESTS_SHED = "hatswarm_requests_shed_total"
CLOUD_REQUESTS = "hatswarm_cloud_fallback_requests_total"
CLOUD_COST = "hatswarm_cloud_fallback_cost_usd_total"
TOKENS = "hatswarm_tokens_total"
"""Tokens by model, kind (prompt, completion) and where (edge, cloud)."""

AGENT_SERIES = (
    REQUEST_SUCCESS,
    REQUEST_FAILURE,
    INFERENCES,
    REQUEST_DURATION,
    MODELS_LOADED,
    COMPUTE_SECONDS,
    ENERGY_JOULES,
    NPU_POWER,
    ROUTE_REQUESTS,
    REQUESTS_SHED,
    CLOUD_REQUESTS,
    CLOUD_COST,
    TOKENS,
)

# --- exported by the operator ------------------------------------------------------------------
COST_USD = "hatswarm_cost_usd_total"
"""A model's attributed spend, labelled with its showback (team, customer, product line)."""

OPERATOR_SERIES = (COST_USD,)


def bucket(histogram: str) -> str:
    """The ``_bucket`` series of a histogram (what ``histogram_quantile`` reads)."""
    return f"{histogram}_bucket"


def any_of(*names: str) -> str:
    """A selector matching any of `names` (``{__name__=~"a|b"}``)."""
    return '{__name__=~"' + "|".join(names) + '"}'
