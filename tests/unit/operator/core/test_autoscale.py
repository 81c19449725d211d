"""Autoscaling: HPA arithmetic, bounds, tolerance and the damping that keeps it from flapping."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hatswarm_operator.api.edgemodel import EdgeModelSpec
from hatswarm_operator.core.autoscale import (
    ScaleDecision,
    ScaleMetrics,
    ScalePolicy,
    ScaleState,
    decide_replicas,
    policy_from_spec,
)
from hypothesis import given, settings
from hypothesis import strategies as st

ON = ScalePolicy(min_replicas=1, max_replicas=8, desired=2, enabled=True, cooldown_seconds=60)


def q(depth: float, rate: float = 0.0, capacity: float | None = None) -> ScaleMetrics:
    return ScaleMetrics(queue_depth=depth, request_rate=rate, capacity_fps=capacity)


def run(
    policy: ScalePolicy, current: int, readings: Iterable[tuple[float, ScaleMetrics | None]]
) -> list[ScaleDecision]:
    """Feed timed readings through the autoscaler as a controller would, carrying its state."""
    state = ScaleState()
    out = []
    for now, metrics in readings:
        d = decide_replicas(policy, current, metrics, state, now)
        out.append(d)
        current, state = d.replicas, d.state
    return out


@pytest.mark.parametrize(
    ("lo", "hi", "desired", "expected"), [(1, 5, 99, 5), (2, 5, 0, 2), (1, 5, 3, 3)]
)
def test_disabled_clamps_desired(lo: int, hi: int, desired: int, expected: int) -> None:
    policy = ScalePolicy(lo, hi, desired, enabled=False)
    d = decide_replicas(policy, 3, q(100.0), ScaleState(), now=0.0)
    assert d.replicas == expected
    assert d.changed == (expected != 3)
    if d.changed:
        assert d.reason.startswith(f"scaled 3 -> {expected}: replicas.desired {desired}")


def test_scale_up_on_queue_depth_with_reason() -> None:
    d = decide_replicas(ON, 2, q(9.0), ScaleState(), now=100.0)
    assert (d.replicas, d.changed) == (5, True)  # ceil(2 * 9 / 4)
    assert d.reason == "scaled 2 -> 5: queue depth 9.0 per replica > target 4"
    assert d.state.last_scale_time == 100.0


@pytest.mark.parametrize(
    ("depth", "expected"),
    [(4.0, 2), (4.4, 2), (3.6, 2), (4.5, 3), (3.5, 2)],  # 3.5 is low: waits, does not drop
)
def test_tolerance_band(depth: float, expected: int) -> None:
    d = decide_replicas(ON, 2, q(depth), ScaleState(), now=0.0)
    assert d.replicas == expected
    if 3.6 <= depth <= 4.4:
        assert "within 10% of target 4" in d.reason


def test_bounds_cap_the_recommendation() -> None:
    d = decide_replicas(ON, 6, q(400.0), ScaleState(), now=0.0)
    assert d.replicas == 8
    d = decide_replicas(ON, 1, q(0.0), ScaleState(low_since=0.0, low_peak=1), now=1000.0)
    assert (d.replicas, d.changed) == (1, False)


def test_out_of_bounds_is_corrected_at_once_even_in_cooldown() -> None:
    state = ScaleState(last_scale_time=99.0)
    d = decide_replicas(ON, 12, q(4.0), state, now=100.0)
    assert (d.replicas, d.changed) == (8, True)
    assert "above replicas.max 8" in d.reason
    d = decide_replicas(ON, 0, None, state, now=100.0)
    assert d.replicas == 1
    assert "below replicas.min 1" in d.reason


def test_no_change_within_cooldown_of_the_last_change() -> None:
    ds = run(ON, 2, [(0.0, q(9.0)), (30.0, q(12.0)), (59.0, q(12.0)), (60.0, q(12.0))])
    assert [d.replicas for d in ds] == [5, 5, 5, 8]
    assert "waits 30 s of cooldown" in ds[1].reason


def test_scale_down_waits_for_a_sustained_low_signal() -> None:
    readings = [(float(t), q(1.0)) for t in range(0, 61, 10)]
    ds = run(ON, 4, readings)
    assert [d.replicas for d in ds] == [4, 4, 4, 4, 4, 4, 1]
    assert ds[0].reason.startswith("holding 4: scale-down to 1")
    assert ds[-1].reason == "scaled 4 -> 1: queue depth 1.0 per replica < target 4 for 60 s"


def test_a_break_in_the_low_signal_restarts_the_wait() -> None:
    readings = [(0.0, q(1.0)), (40.0, q(4.0)), (50.0, q(1.0)), (100.0, q(1.0)), (110.0, q(1.0))]
    ds = run(ON, 4, readings)
    assert [d.replicas for d in ds] == [4, 4, 4, 4, 1]


def test_scale_down_goes_to_the_highest_recommendation_of_the_low_stretch() -> None:
    readings = [(0.0, q(1.0)), (20.0, q(2.9)), (40.0, q(0.0)), (60.0, q(0.0))]
    ds = run(ON, 4, readings)
    assert ds[-1].replicas == 3  # ceil(4 * 2.9 / 4), not the 1 of the last reading


def test_no_flapping_on_an_oscillating_signal() -> None:
    """Load alternating around the target every 10 s moves the count at most once a minute."""
    readings = [(t * 10.0, q(8.0 if t % 2 else 1.0)) for t in range(60)]
    ds = run(ON, 2, readings)
    times = [t * 10.0 for t, d in enumerate(ds) if d.changed]
    assert all(b - a >= 60 for a, b in itertools.pairwise(times))
    downs = [d for d in ds if d.changed and "<" in d.reason]
    assert downs == []  # the low never lasted a full cooldown


def test_utilization_keeps_a_busy_model_up_when_queues_are_empty() -> None:
    # Queue says "fewer", utilisation (95% of capacity against 70%) says "more": more wins.
    d = decide_replicas(ON, 2, q(0.0, rate=190.0, capacity=200.0), ScaleState(), now=0.0)
    assert d.replicas == 3  # ceil(2 * 95 / 70)
    assert d.reason == "scaled 2 -> 3: utilization 95% of 200 fps > target 70%"
    d = decide_replicas(ON, 2, q(0.0, rate=140.0, capacity=200.0), ScaleState(), now=0.0)
    assert (d.replicas, d.changed) == (2, False)
    assert d.state.low_since is None


def test_scale_from_zero_ignores_cooldown() -> None:
    policy = ScalePolicy(0, 4, 1, enabled=True, cooldown_seconds=300)
    d = decide_replicas(policy, 0, q(0.0, rate=3.0), ScaleState(last_scale_time=10.0), now=11.0)
    assert (d.replicas, d.changed) == (1, True)
    d = decide_replicas(policy, 0, q(0.0), ScaleState(), now=11.0)
    assert (d.replicas, d.changed) == (0, False)


def test_missing_metrics_hold_and_break_the_low_stretch() -> None:
    d = decide_replicas(ON, 4, None, ScaleState(low_since=0.0, low_peak=1), now=500.0)
    assert (d.replicas, d.changed, d.reason) == (4, False, "holding 4: no metrics")
    assert d.state.low_since is None


def test_policy_from_spec() -> None:
    spec = EdgeModelSpec.model_validate(
        {
            "pool": "p",
            "version": "v1",
            "artifacts": [{"accelerator": "cpu", "format": "onnx", "uri": "https://x/m.onnx",
                           "sha256": "0" * 64}],
            "replicas": {"min": 1, "max": 4, "desired": 9},
            "autoscale": {"enabled": True, "targetQueueDepth": 2, "cooldownSeconds": 30},
        }
    )  # fmt: skip
    p = policy_from_spec(spec)
    assert p == ScalePolicy(1, 4, 9, True, 2.0, 70.0, 30.0)
    assert decide_replicas(p, 4, q(2.0), ScaleState(), 0.0).replicas == 4


readings_st = st.lists(
    st.tuples(
        st.floats(0.5, 120.0),
        st.floats(0.0, 40.0),
        st.floats(0.0, 500.0),
        st.one_of(st.none(), st.floats(1.0, 1000.0)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    lo=st.integers(1, 4),
    span=st.integers(0, 6),
    start=st.integers(0, 12),
    cooldown=st.floats(0.0, 300.0),
    steps=readings_st,
)
def test_any_load_stays_in_bounds_and_respects_cooldown(
    lo: int,
    span: int,
    start: int,
    cooldown: float,
    steps: list[tuple[float, float, float, float | None]],
) -> None:
    policy = ScalePolicy(lo, lo + span, lo, enabled=True, cooldown_seconds=cooldown)
    now, readings = 0.0, []
    for dt, depth, rate, cap in steps:
        now += dt
        readings.append((now, q(depth, rate, cap)))
    ds = run(policy, start, readings)
    in_bounds = lo <= start <= lo + span
    changes = [t for (t, _), d in zip(readings, ds, strict=True) if d.changed]
    for i, d in enumerate(ds):
        assert lo <= d.replicas <= lo + span
        assert d.changed == (d.replicas != (ds[i - 1].replicas if i else start))
    gaps = changes if in_bounds else changes[1:]
    assert all(b - a >= cooldown for a, b in itertools.pairwise(gaps))
