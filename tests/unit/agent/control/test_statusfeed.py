"""What a WatchNodeStatus stream sends: plan changes at once, live measurements at most every
live interval, clocks never, and a heartbeat after a silence."""

from __future__ import annotations

from hatswarm_agent.control.statusfeed import StatusFeed, intervals, planning_key
from hatswarm_agent.protocol.v1 import control_pb2

READY = control_pb2.MODEL_STATE_READY
LOADING = control_pb2.MODEL_STATE_LOADING


def status(
    state: int = READY, rate: float = 0.0, uptime: int = 1, generation: int = 1
) -> control_pb2.NodeStatusResponse:
    return control_pb2.NodeStatusResponse(
        node_name="pi-1",
        accelerator="hailo8l",
        models=[control_pb2.ModelStatus(name="m", version="1", state=state, request_rate=rate)],  # type: ignore[arg-type]
        uptime_seconds=uptime,
        now_unix_ms=uptime * 1000,
        routing_generation=generation,
    )


def test_the_first_status_and_every_planned_change_go_out_at_once() -> None:
    feed = StatusFeed(heartbeat_s=2.0, live_s=5.0)
    assert feed.status_due(status(LOADING), 0.0)
    assert not feed.status_due(status(LOADING, uptime=2), 0.1)  # only the clocks moved
    assert feed.status_due(status(READY), 0.2)  # a state change: at once
    assert feed.status_due(status(READY, generation=2), 0.3)  # a new routing table: at once


def test_live_measurements_alone_at_most_every_live_interval() -> None:
    feed = StatusFeed(heartbeat_s=2.0, live_s=5.0)
    assert feed.status_due(status(rate=1.0), 0.0)
    assert not feed.status_due(status(rate=2.0), 4.9)
    assert feed.status_due(status(rate=2.0), 5.0)
    assert not feed.status_due(status(rate=2.0, uptime=9), 11.0)  # nothing measured moved


def test_a_heartbeat_after_a_silence_and_never_right_after_a_status() -> None:
    feed = StatusFeed(heartbeat_s=2.0, live_s=5.0)
    assert feed.status_due(status(), 0.0)
    assert not feed.heartbeat_due(1.9)
    assert feed.next_due(1.5) == 0.5
    assert feed.heartbeat_due(2.0)
    assert not feed.heartbeat_due(3.0)
    assert feed.status_due(status(LOADING), 3.5)
    assert not feed.heartbeat_due(5.0)  # the status counted as a message
    assert feed.heartbeat_due(5.5)


def test_planning_key_ignores_live_fields_only() -> None:
    assert planning_key(status(rate=1.0, uptime=1)) == planning_key(status(rate=9.0, uptime=7))
    assert planning_key(status(READY)) != planning_key(status(LOADING))


def test_intervals_default_and_floor() -> None:
    assert intervals(control_pb2.WatchNodeStatusRequest()) == (2.0, 5.0)
    asked = control_pb2.WatchNodeStatusRequest(heartbeat_interval_ms=10, live_interval_ms=3000)
    assert intervals(asked) == (0.1, 3.0)


def test_cloud_counters_and_token_load_are_live_measurements() -> None:
    """They climb with every request: alone they never push a status at once."""
    busy = status()
    busy.cloud_requests["m"] = 40
    busy.cloud_failures = 2
    busy.generation.active_sequences = 3
    busy.models[0].generation.tokens_per_second = 12.5
    assert planning_key(busy) == planning_key(status())
