"""The dispatcher's agent-wide settings (command-line flags) and how a pushed table overrides them."""

from __future__ import annotations

from dataclasses import dataclass

from hatswarm_agent.protocol.defaults import ROUTE_RETRIES, ROUTE_TIMEOUT_MS
from hatswarm_agent.routing.policy import ATTEMPT_FACTOR, ATTEMPT_MIN_S, CompiledTable


@dataclass
class DispatchConfig:
    """Agent-wide routing settings; a pushed table's own values win where it sets them."""

    node_name: str = "local"
    policy: str = ""  # empty: the table's (PowerOfTwoChoices by default)
    adapter_policy: str = ""  # empty: the table's (Affinity by default)
    retries: int = ROUTE_RETRIES
    timeout_ms: int = ROUTE_TIMEOUT_MS
    hedge_after_percentile: float = 0.0
    shed_below_priority: int = 1
    cache_max_entries: int = 4096
    cache_max_bytes: int = 64 << 20
    probe_interval_s: float = 0.2
    # Per-attempt timeout: factor x the peer's observed latency, never under the floor.
    attempt_timeout_factor: float = ATTEMPT_FACTOR
    attempt_timeout_min_ms: int = int(ATTEMPT_MIN_S * 1000)
    # In a pool the control plane sends the table: until one is here (pushed, restored or
    # static), a model not served here is UNAVAILABLE (retryable), not NOT_FOUND.
    await_table: bool = False

    def retries_for(self, compiled: CompiledTable) -> int:
        """A pushed table (generation > 0) always says how many; a static one may say 0."""
        return compiled.table.retries if compiled.table.generation else self.retries

    def timeout_s(self, compiled: CompiledTable) -> float:
        return (compiled.table.timeout_ms or self.timeout_ms) / 1000

    def hedge_percentile(self, compiled: CompiledTable) -> float:
        return compiled.table.hedge_after_percentile or self.hedge_after_percentile

    def policy_for(self, compiled: CompiledTable) -> str:
        return self.policy or compiled.policy

    def adapter_policy_for(self, compiled: CompiledTable) -> str:
        return self.adapter_policy or compiled.adapter_policy
