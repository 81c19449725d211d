"""When a WatchNodeStatus stream sends what (pure: no clock, no I/O).

A control plane following a thousand agents must not pay for a thousand identical statuses a
second. A status is sent again at once when anything the control plane *plans on* changed
(which models are loaded and in what state, adapters, backend, routing generation, ...), at
most every `live_s` when only live measurements moved (rates, latencies, queues, temperature,
uptime), and otherwise a heartbeat (no status) after `heartbeat_s` of silence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hatswarm_agent.protocol.v1 import control_pb2

DEFAULT_HEARTBEAT_S = 2.0
DEFAULT_LIVE_S = 5.0
MIN_INTERVAL_S = 0.1

LIVE_NODE_FIELDS = ("temperature_c", "watts", "uptime_seconds", "artifact_cache_bytes",
                    "now_unix_ms", "cloud_requests", "cloud_failures", "tokens",
                    "generation")  # fmt: skip
CLOCK_FIELDS = ("uptime_seconds", "now_unix_ms")
"""Move every second by themselves: never a reason to send."""
LIVE_MODEL_FIELDS = (
    "queue_depth", "request_rate", "latency", "request_success", "request_failure",
    "inference_count", "execution_count", "compute_seconds", "energy_joules", "capacity_fps",
    "adapter_requests", "adapter_loads", "adapter_evictions", "generation",
)  # fmt: skip


def planning_key(status: control_pb2.NodeStatusResponse) -> bytes:
    """The status without its live measurements: what placement and routing act on."""
    plan = control_pb2.NodeStatusResponse()
    plan.CopyFrom(status)
    for name in LIVE_NODE_FIELDS:
        plan.ClearField(name)  # type: ignore[arg-type]
    for m in plan.models:
        for name in LIVE_MODEL_FIELDS:
            m.ClearField(name)  # type: ignore[arg-type]
    return plan.SerializeToString(deterministic=True)


def intervals(request: control_pb2.WatchNodeStatusRequest) -> tuple[float, float]:
    """(heartbeat_s, live_s) a watcher asked for, defaults for 0, never under 100 ms."""
    heartbeat = request.heartbeat_interval_ms / 1000 or DEFAULT_HEARTBEAT_S
    live = request.live_interval_ms / 1000 or DEFAULT_LIVE_S
    return max(heartbeat, MIN_INTERVAL_S), max(live, MIN_INTERVAL_S)


@dataclass
class StatusFeed:
    """One stream's memory: what it last sent and when."""

    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    live_s: float = DEFAULT_LIVE_S
    _plan: bytes | None = None
    _full: bytes | None = None
    _sent_at: float = -math.inf  # any message
    _status_at: float = -math.inf  # a full status

    def status_due(self, status: control_pb2.NodeStatusResponse, now: float) -> bool:
        """Should `status` go out now? (Then it counts as sent.)"""
        plan = planning_key(status)
        if plan != self._plan:
            return self._sent(plan, status, now)
        if now - self._status_at < self.live_s:
            return False
        full = _measured(status)
        if full == self._full:
            return False
        return self._sent(plan, status, now, full)

    def heartbeat_due(self, now: float) -> bool:
        """Nothing sent for `heartbeat_s`: a heartbeat goes out (and counts as sent)."""
        if now - self._sent_at < self.heartbeat_s:
            return False
        self._sent_at = now
        return True

    def next_due(self, now: float) -> float:
        """Seconds until a heartbeat would be due."""
        return max(0.0, self._sent_at + self.heartbeat_s - now)

    def _sent(
        self,
        plan: bytes,
        status: control_pb2.NodeStatusResponse,
        now: float,
        full: bytes | None = None,
    ) -> bool:
        self._plan = plan
        self._full = full if full is not None else _measured(status)
        self._sent_at = self._status_at = now
        return True


def _measured(status: control_pb2.NodeStatusResponse) -> bytes:
    """The status without its clocks: what changed when a live measurement moved."""
    copy = control_pb2.NodeStatusResponse()
    copy.CopyFrom(status)
    for name in CLOCK_FIELDS:
        copy.ClearField(name)  # type: ignore[arg-type]
    return copy.SerializeToString(deterministic=True)
