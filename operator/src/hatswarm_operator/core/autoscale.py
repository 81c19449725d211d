"""Autoscaling an EdgeModel's replica count: a pure decision from measured load to a count.

The control runtime samples each model's load (queue depth per ready replica, request rate, the
measured capacity of the replicas it has), calls :func:`decide_replicas` with the time, writes
the count to ``status.desiredReplicas`` (placement then converges on it) and posts the reason as
an Event when it changed. Nothing here does I/O or reads a clock.

The rule is the HorizontalPodAutoscaler's: for each metric ``ceil(current * value / target)``,
no change while ``|value / target - 1| <= tolerance`` (10 %), the largest recommendation of the
metrics wins, the result is clamped into ``[replicas.min, replicas.max]``. Metrics:

- queue depth per replica against ``targetQueueDepth`` (requests waiting: the direct signal of
  a replica that cannot keep up);
- utilisation, ``request rate / measured capacity fps``, against ``targetUtilizationPercent``,
  when the capacity is known. Queue depth alone reads 0 both for "just enough" and for "far too
  many", so this is the metric that keeps a busy model from scaling down to ``min``.

Damping, so a pool of Pis that take seconds to load a model does not flap:

- No change within ``cooldownSeconds`` of the last change: a new replica must load and take
  traffic before its effect can be measured.
- Scale-up reacts to the first high reading after that cooldown.
- Scale-down waits until the signal has stayed low for ``cooldownSeconds`` without a break, and
  then goes only to the highest count recommended during that low stretch (HPA's scale-down
  stabilisation window in two numbers of state).
- Two exceptions act at once: a count outside ``[min, max]`` (the spec changed) is clamped, and
  a model at zero replicas with demand gets one (otherwise it would wait out a cooldown with no
  replica at all).

The low stretch lives in :class:`ScaleState`, which the control runtime keeps between calls (in
memory is enough: losing it only restarts the stretch, which delays a scale-down, never causes
one; ``last_scale_time`` maps to ``status.lastScaleTime``).

With autoscaling disabled the count is ``replicas.desired`` clamped into ``[min, max]``
(``kubectl scale`` sets ``desired``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hatswarm_operator.api.edgemodel import EdgeModelSpec

DEFAULT_TOLERANCE = 0.1
"""No change while a metric is within 10 % of its target (the HPA's default)."""

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    """Bounds and targets, from ``spec.replicas`` and ``spec.autoscale``."""

    min_replicas: int
    max_replicas: int
    desired: int
    enabled: bool = False
    target_queue_depth: float = 4.0
    target_utilization_percent: float = 70.0
    cooldown_seconds: float = 60.0
    tolerance: float = DEFAULT_TOLERANCE

    def clamp(self, n: int) -> int:
        """``n`` moved into ``[min_replicas, max_replicas]``."""
        return min(max(n, self.min_replicas), self.max_replicas)


@dataclass(frozen=True, slots=True)
class ScaleMetrics:
    """The model's load, measured over a recent window across its ready replicas.

    ``capacity_fps`` is the summed measured throughput of the current replicas (inferences/s);
    ``None`` or 0 when unknown, and utilisation is then not used.
    """

    queue_depth: float
    """Mean requests waiting per ready replica."""
    request_rate: float = 0.0
    """Requests per second served by the model, all replicas together."""
    capacity_fps: float | None = None


@dataclass(frozen=True, slots=True)
class ScaleState:
    """What the autoscaler remembers between calls (times in seconds, same clock as ``now``)."""

    last_scale_time: float | None = None
    low_since: float | None = None
    """When the recommendation first went below the current count without a break since."""
    low_peak: int = 0
    """The highest count recommended since ``low_since``: where a scale-down goes."""


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """The count to run, whether it changed, why (an Event message), and the state to keep."""

    replicas: int
    changed: bool
    reason: str
    state: ScaleState


@dataclass(frozen=True, slots=True)
class _Recommendation:
    replicas: int
    why: str


def policy_from_spec(spec: EdgeModelSpec) -> ScalePolicy:
    """Adapt the API spec into a :class:`ScalePolicy`."""
    return ScalePolicy(
        min_replicas=spec.replicas.min,
        max_replicas=spec.replicas.upper(),
        desired=spec.replicas.desired,
        enabled=spec.autoscale.enabled,
        target_queue_depth=spec.autoscale.target_queue_depth,
        target_utilization_percent=float(spec.autoscale.target_utilization_percent),
        cooldown_seconds=float(spec.autoscale.cooldown_seconds),
    )


def decide_replicas(
    policy: ScalePolicy,
    current: int,
    metrics: ScaleMetrics | None,
    state: ScaleState,
    now: float,
) -> ScaleDecision:
    """The replica count to run from ``now`` on.

    ``current`` is the count last decided (``status.desiredReplicas``), ``metrics`` the load
    measured at that count (``None`` when there is no fresh measurement: the count holds, a
    missing signal never scales down).
    """
    if not policy.enabled:
        target = policy.clamp(policy.desired)
        if target == current:
            return ScaleDecision(current, False, f"holding {current}: autoscale disabled", state)
        return ScaleDecision(
            target,
            True,
            f"scaled {current} -> {target}: replicas.desired {policy.desired} in "
            f"[{policy.min_replicas}, {policy.max_replicas}] (autoscale disabled)",
            ScaleState(last_scale_time=now),
        )

    bounded = policy.clamp(current)
    if bounded != current:
        side = (
            f"below replicas.min {policy.min_replicas}"
            if current < policy.min_replicas
            else f"above replicas.max {policy.max_replicas}"
        )
        return _change(current, bounded, side, now)
    if metrics is None:
        return ScaleDecision(current, False, f"holding {current}: no metrics", _calm(state))

    rec = _recommend(policy, current, metrics)
    target = policy.clamp(rec.replicas)

    if target > current:
        if current == 0:
            return _change(current, target, rec.why, now)
        wait = _cooldown_left(policy, state, now)
        if wait > 0:
            return ScaleDecision(
                current,
                False,
                f"holding {current}: scale-up to {target} ({rec.why}) waits {wait:.0f} s "
                f"of cooldown",
                _calm(state),
            )
        return _change(current, target, rec.why, now)

    if target == current:
        return ScaleDecision(current, False, f"holding {current}: {rec.why}", _calm(state))

    # The signal says fewer: count the low stretch and keep its highest recommendation.
    low_since = state.low_since if state.low_since is not None else now
    peak = max(target, state.low_peak) if state.low_since is not None else target
    kept = ScaleState(state.last_scale_time, low_since, peak)
    low_for = now - low_since
    wait = max(_cooldown_left(policy, state, now), policy.cooldown_seconds - low_for)
    if wait > 0:
        return ScaleDecision(
            current,
            False,
            f"holding {current}: scale-down to {peak} ({rec.why}) waits {wait:.0f} s "
            f"for a sustained low signal",
            kept,
        )
    return _change(current, peak, f"{rec.why} for {low_for:.0f} s", now)


def _recommend(policy: ScalePolicy, current: int, m: ScaleMetrics) -> _Recommendation:
    if current == 0:
        if m.queue_depth > 0 or m.request_rate > 0:
            return _Recommendation(
                1, f"demand with no replica ({m.request_rate:.1f} req/s, queue {m.queue_depth:.1f})"
            )
        return _Recommendation(0, "no demand")

    recs = [
        _hpa(
            current,
            m.queue_depth,
            policy.target_queue_depth,
            policy.tolerance,
            f"queue depth {m.queue_depth:.1f} per replica",
            f"target {policy.target_queue_depth:g}",
        )
    ]
    if m.capacity_fps:
        util = 100.0 * m.request_rate / m.capacity_fps
        recs.append(
            _hpa(
                current,
                util,
                policy.target_utilization_percent,
                policy.tolerance,
                f"utilization {util:.0f}% of {m.capacity_fps:g} fps",
                f"target {policy.target_utilization_percent:g}%",
            )
        )
    # The largest recommendation wins (on a tie the first, queue depth, explains it).
    return max(recs, key=lambda r: r.replicas)


def _hpa(
    current: int, value: float, target: float, tolerance: float, what: str, goal: str
) -> _Recommendation:
    ratio = value / target
    if abs(ratio - 1.0) <= tolerance + _EPS:
        return _Recommendation(current, f"{what} within {tolerance:.0%} of {goal}")
    sign = ">" if ratio > 1.0 else "<"
    return _Recommendation(math.ceil(current * ratio - _EPS), f"{what} {sign} {goal}")


def _cooldown_left(policy: ScalePolicy, state: ScaleState, now: float) -> float:
    if state.last_scale_time is None:
        return 0.0
    return max(0.0, policy.cooldown_seconds - (now - state.last_scale_time))


def _calm(state: ScaleState) -> ScaleState:
    """The state once the signal is not low: the low stretch is broken."""
    if state.low_since is None:
        return state
    return ScaleState(last_scale_time=state.last_scale_time)


def _change(current: int, target: int, why: str, now: float) -> ScaleDecision:
    return ScaleDecision(
        target, True, f"scaled {current} -> {target}: {why}", ScaleState(last_scale_time=now)
    )
