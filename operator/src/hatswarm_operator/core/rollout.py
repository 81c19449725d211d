"""Rolling out a new ``spec.version``: a pure state machine from spec, status and metrics.

The planner (`reconcile`, through `rolloutplan`) calls :func:`decide_rollout` on every
reconcile of an EdgeModel with what it knows (the spec's version, ``status.stableVersion`` and
``status.canary``, the gate's verdict once it ran, canary and stable metrics since the current
step began, the time) and applies the answer: it writes ``stable_version`` and ``canary``
back to status, pushes ``weights`` into the agents' routing tables, converges ``loads``
(through placement) and posts ``events``. Nothing here does I/O or reads a clock.

Phases of ``status.canary`` for a new version V against the stable version S::

    (start) --gate configured--> Validating --gate passed--> Progressing(step 0) ... --> Succeeded
                                     |                          |  (each step healthy for
                                     +--gate failed--+          |   analysisWindowSeconds)
                                                     v          v
                                                  RolledBack <--+ error rate / p99 breach

Rules:

- The stable version keeps serving throughout; V takes no traffic until it passed the gate
  (``Validating`` loads it on one node, weight 0). Routing weights always sum to 100, and S's
  weight is never 0 unless V succeeded (then V is the stable version).
- Canary weights are ``canaryWeight`` then ``steps``, ascending; a step below 100 is analysed
  for ``analysisWindowSeconds``; reaching 100 (or running out of steps) is the promotion itself
  (S := V), so S still takes traffic at every analysed step and a rollback is instant.
- A window with fewer than ``min_requests`` canary requests is not judged at all: neither pass
  nor fail, the step waits for traffic. With enough requests a breach rolls back at once, even
  mid-window; a healthy step advances only when its full window has passed.
- A rolled-back version is remembered (``canary`` with phase RolledBack and that version) and
  not retried while ``spec.version`` stays on it; changing ``spec.version`` (to anything,
  including back to S) clears that memory.
- A new ``spec.version`` during a rollout supersedes the canary: it is unloaded and the rollout
  restarts with the new version. ``spec.version`` set back to S abandons the canary.
- ``Recreate`` runs the gate (if configured) and then replaces S with V in one go, asking the
  converger to unload S first (for nodes that cannot hold both). A first deployment (no S) goes
  straight to stable after the gate.
- The canary runs on ``ceil(replicas * weight / 100)`` replicas (at least one) beside S's full
  ``replicas``, like Argo Rollouts' default: the surge costs memory, but a rollback never waits
  for S to load. When ``canary_ready`` is given, promotion waits until V is ready on
  ``replicas`` replicas (V is loaded on all of them first, at the last step's weight).

``loads`` is the complete set of versions this model should have loaded: the converger unloads
any other version of the model it finds; ``unloads`` names the versions this very transition
retires (for logs and Events).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

Phase = Literal["Validating", "Progressing", "Succeeded", "RolledBack", "Failed"]
ACTIVE: frozenset[str] = frozenset({"Validating", "Progressing"})
FAILED: frozenset[str] = frozenset({"RolledBack", "Failed"})

MIN_REQUESTS = 10
"""Fewer canary requests than this in a window mean "wait", not "pass"."""


class Role(StrEnum):
    """Why a version is loaded."""

    STABLE = "stable"
    VALIDATION = "validation"
    """On one node, taking no traffic, for the gate's samples."""
    CANARY = "canary"


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    """``spec.rollout`` plus whether ``spec.validation`` (the gate) is configured."""

    strategy: Literal["Canary", "Recreate"] = "Canary"
    canary_weight: int = 10
    steps: tuple[int, ...] = (10, 50, 100)
    analysis_window_seconds: float = 60.0
    max_error_rate: float = 0.05
    max_p99_latency_ms: float | None = None
    gate: bool = False
    min_requests: int = MIN_REQUESTS

    def weights(self) -> tuple[int, ...]:
        """The canary weights analysed in turn: ascending, each in 1..99 (100 is promotion)."""
        return tuple(sorted({w for w in (self.canary_weight, *self.steps) if 0 < w < 100}))


@dataclass(frozen=True, slots=True)
class Canary:
    """``status.canary`` with times as seconds: ``step`` indexes :meth:`RolloutPolicy.weights`,
    ``started_at`` is when the current phase or step began (its analysis window's start)."""

    version: str
    phase: Phase
    weight: int = 0
    step: int = 0
    started_at: float | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """The validation gate's result for one version (a verdict for another one is ignored)."""

    version: str
    passed: bool
    message: str


@dataclass(frozen=True, slots=True)
class WindowMetrics:
    """Requests, errors and p99 latency of one version since the current step began."""

    requests: int
    errors: int = 0
    p99_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class RolloutInput:
    """Everything :func:`decide_rollout` looks at; ``replicas`` is the model's replica count."""

    version: str
    stable_version: str | None
    canary: Canary | None
    policy: RolloutPolicy
    now: float
    replicas: int = 1
    gate: GateVerdict | None = None
    canary_metrics: WindowMetrics | None = None
    stable_metrics: WindowMetrics | None = None
    canary_ready: int | None = None
    """Ready replicas of the canary version; ``None``: unknown, promotion does not wait."""


@dataclass(frozen=True, slots=True)
class VersionReplicas:
    """Run ``replicas`` replicas of ``version`` in ``role``."""

    version: str
    role: Role
    replicas: int


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    """A Kubernetes Event to post on the EdgeModel."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class RolloutDecision:
    """The next state and what to do about it.

    ``weights`` maps version -> percent of traffic (sums to 100; empty while no version may
    serve, i.e. a first deployment not yet validated). ``requeue_after`` is when to look again
    without any other change (seconds), ``None`` when only new input can change the answer.
    """

    stable_version: str | None
    canary: Canary | None
    weights: Mapping[str, int]
    loads: tuple[VersionReplicas, ...]
    unloads: tuple[str, ...] = ()
    events: tuple[RolloutEvent, ...] = ()
    unload_first: bool = False
    requeue_after: float | None = None


def decide_rollout(inp: RolloutInput) -> RolloutDecision:
    """The next rollout state for ``inp`` (see the module docstring for the rules)."""
    v, s, c = inp.version, inp.stable_version, inp.canary
    if s is not None and v == s:
        return _at_stable(inp, s)
    if c is not None and c.version == v:
        if c.phase in FAILED:
            # Remembered failure: not retried until spec.version changes.
            return _hold(inp, c, unloads=(v,))
        if c.phase == "Succeeded":
            # Status says V succeeded but stable lags (a partial status write): finish it.
            return _promote(inp, (), (), "already succeeded")
        if s is None:
            # Nothing else can serve: a first deployment never analyses a canary.
            if c.phase == "Validating":
                return _validating(inp, c)
            return _promote(inp, (), (), "first deployment")
        if c.phase == "Validating":
            return _validating(inp, c)
        return _progressing(inp, c)
    events: list[RolloutEvent] = []
    unloads: list[str] = []
    if c is not None and c.phase in ACTIVE:
        events.append(
            RolloutEvent(
                "Normal",
                "CanarySuperseded",
                f"spec.version {v} supersedes canary {c.version}: restarting the rollout",
            )
        )
        unloads.append(c.version)
    return _start(inp, tuple(events), tuple(unloads))


def _at_stable(inp: RolloutInput, s: str) -> RolloutDecision:
    c = inp.canary
    events: tuple[RolloutEvent, ...] = ()
    unloads: tuple[str, ...] = ()
    canary = c
    if c is not None and c.version != s and c.phase != "Succeeded":
        if c.phase in ACTIVE:
            events = (
                RolloutEvent(
                    "Normal",
                    "RolloutAborted",
                    f"spec.version is back on stable {s}: canary {c.version} abandoned",
                ),
            )
        # spec.version moved off the canary: forget it, so that version may be tried again.
        unloads = (c.version,)
        canary = None
    elif c is not None and c.version == s and c.phase in ACTIVE:
        # Stable already is the canary's version (a partial status write): it succeeded.
        canary = replace(c, phase="Succeeded", weight=100)
    return RolloutDecision(
        stable_version=s,
        canary=canary,
        weights=_weights(s),
        loads=_loads(inp),
        unloads=unloads,
        events=events,
    )


def _start(
    inp: RolloutInput, events: tuple[RolloutEvent, ...], unloads: tuple[str, ...]
) -> RolloutDecision:
    v, p = inp.version, inp.policy
    if p.gate:
        canary = Canary(v, "Validating", 0, 0, inp.now, "validating on one node")
        event = RolloutEvent("Normal", "ValidationStarted", f"validating {v} on one node")
        return RolloutDecision(
            stable_version=inp.stable_version,
            canary=canary,
            weights=_weights(inp.stable_version),
            loads=_loads(inp, v, Role.VALIDATION, 1),
            unloads=unloads,
            events=(*events, event),
        )
    return _after_gate(inp, events, unloads)


def _validating(inp: RolloutInput, c: Canary) -> RolloutDecision:
    g = inp.gate
    if g is None or g.version != c.version:
        return _hold(
            inp,
            replace(c, message="waiting for the validation gate on one node"),
            loads=_loads(inp, c.version, Role.VALIDATION, 1),
        )
    if not g.passed:
        return _rollback(inp, c, f"validation gate failed: {g.message}")
    passed = RolloutEvent("Normal", "ValidationPassed", f"{c.version} passed the gate: {g.message}")
    return _after_gate(inp, (passed,), ())


def _after_gate(
    inp: RolloutInput, events: tuple[RolloutEvent, ...], unloads: tuple[str, ...]
) -> RolloutDecision:
    v, s, p = inp.version, inp.stable_version, inp.policy
    if s is None:
        return _promote(inp, events, unloads, "first deployment")
    if p.strategy == "Recreate":
        return _promote(inp, events, unloads, f"Recreate replaces {s}", unload_first=True)
    weights = p.weights()
    if not weights:
        return _promote(inp, events, unloads, "no canary step below 100%")
    w = weights[0]
    canary = Canary(v, "Progressing", w, 0, inp.now, _analysing(w, p.analysis_window_seconds))
    event = RolloutEvent("Normal", "CanaryStarted", f"{v} takes {w}% of traffic, {s} {100 - w}%")
    return RolloutDecision(
        stable_version=s,
        canary=canary,
        weights=_weights(s, v, w),
        loads=_loads(inp, v, Role.CANARY, _canary_replicas(inp.replicas, w)),
        unloads=unloads,
        events=(*events, event),
        requeue_after=p.analysis_window_seconds,
    )


def _progressing(inp: RolloutInput, c: Canary) -> RolloutDecision:
    p, s, v, now = inp.policy, inp.stable_version, c.version, inp.now
    weights = p.weights()
    if not weights:
        return _promote(inp, (), (), "no canary step below 100%")
    i = min(max(c.step, 0), len(weights) - 1)
    w = weights[i]
    started = c.started_at if c.started_at is not None else now
    window = p.analysis_window_seconds
    loads = _loads(inp, v, Role.CANARY, _canary_replicas(inp.replicas, w))
    here = replace(c, weight=w, step=i, started_at=started)

    m = inp.canary_metrics
    if m is None or m.requests < p.min_requests:
        got = m.requests if m is not None else 0
        msg = f"waiting for traffic at {w}%: {got} of {p.min_requests} requests in the window"
        return _hold(inp, replace(here, message=msg), loads=loads, requeue_after=window)
    breach = _breach(p, m, inp.stable_metrics)
    if breach is not None:
        return _rollback(inp, here, breach)
    elapsed = now - started
    if elapsed < window:
        left = window - elapsed
        msg = f"{_analysing(w, left)}; {_health(m)}"
        return _hold(inp, replace(here, message=msg), loads=loads, requeue_after=left)
    if i + 1 < len(weights):
        nw = weights[i + 1]
        canary = Canary(v, "Progressing", nw, i + 1, now, _analysing(nw, window))
        event = RolloutEvent(
            "Normal",
            "CanaryStepped",
            f"{v} {w}% -> {nw}% after {elapsed:.0f} s: {_health(m)}",
        )
        return RolloutDecision(
            stable_version=s,
            canary=canary,
            weights=_weights(s, v, nw),
            loads=_loads(inp, v, Role.CANARY, _canary_replicas(inp.replicas, nw)),
            events=(event,),
            requeue_after=window,
        )
    if inp.canary_ready is not None and inp.canary_ready < inp.replicas:
        msg = f"promoting: {v} ready on {inp.canary_ready}/{inp.replicas} replicas"
        full = _loads(inp, v, Role.CANARY, inp.replicas)
        return _hold(inp, replace(here, message=msg), loads=full)
    return _promote(inp, (), (), f"healthy at every step ({_health(m)})")


def _breach(p: RolloutPolicy, m: WindowMetrics, stable: WindowMetrics | None) -> str | None:
    rate = m.error_rate
    if rate > p.max_error_rate:
        ref = f" (stable {stable.error_rate:.3g})" if stable is not None and stable.requests else ""
        return f"error rate {rate:.3g} > {p.max_error_rate:g}{ref}"
    limit = p.max_p99_latency_ms
    if limit is not None and m.p99_ms is not None and m.p99_ms > limit:
        ref = ""
        if stable is not None and stable.p99_ms is not None:
            ref = f" (stable {stable.p99_ms:.0f} ms)"
        return f"p99 {m.p99_ms:.0f} ms > {limit:g} ms{ref}"
    return None


def _rollback(inp: RolloutInput, c: Canary, reason: str) -> RolloutDecision:
    s = inp.stable_version
    serving = f"{s} keeps serving" if s is not None else "no version serves yet"
    canary = Canary(c.version, "RolledBack", 0, c.step, inp.now, reason)
    event = RolloutEvent("Warning", "RolledBack", f"{c.version} rolled back, {serving}: {reason}")
    return RolloutDecision(
        stable_version=s,
        canary=canary,
        weights=_weights(s),
        loads=_loads(inp),
        unloads=(c.version,),
        events=(event,),
    )


def _promote(
    inp: RolloutInput,
    events: tuple[RolloutEvent, ...],
    unloads: tuple[str, ...],
    why: str,
    *,
    unload_first: bool = False,
) -> RolloutDecision:
    v, s = inp.version, inp.stable_version
    step = inp.canary.step if inp.canary is not None and inp.canary.version == v else 0
    canary = Canary(v, "Succeeded", 100, step, inp.now, why)
    retired = (*unloads, s) if s is not None and s != v else unloads
    before = f" (was {s})" if s is not None else ""
    event = RolloutEvent("Normal", "RolloutSucceeded", f"{v} is the stable version{before}: {why}")
    return RolloutDecision(
        stable_version=v,
        canary=canary,
        weights=_weights(v),
        loads=(VersionReplicas(v, Role.STABLE, inp.replicas),),
        unloads=retired,
        events=(*events, event),
        unload_first=unload_first,
    )


def _hold(
    inp: RolloutInput,
    c: Canary,
    *,
    loads: tuple[VersionReplicas, ...] | None = None,
    unloads: tuple[str, ...] = (),
    requeue_after: float | None = None,
) -> RolloutDecision:
    """No transition: same stable, routing by the canary's current weight, no Events."""
    s = inp.stable_version
    takes = c.phase == "Progressing" and s is not None
    return RolloutDecision(
        stable_version=s,
        canary=c,
        weights=_weights(s, c.version, c.weight) if takes else _weights(s),
        loads=loads if loads is not None else _loads(inp),
        unloads=unloads,
        requeue_after=requeue_after,
    )


def _weights(stable: str | None, canary: str | None = None, w: int = 0) -> Mapping[str, int]:
    if stable is None:
        return MappingProxyType({})
    if canary is None or w <= 0 or canary == stable:
        return MappingProxyType({stable: 100})
    return MappingProxyType({stable: 100 - w, canary: w})


def _loads(
    inp: RolloutInput, version: str | None = None, role: Role = Role.CANARY, replicas: int = 0
) -> tuple[VersionReplicas, ...]:
    out: list[VersionReplicas] = []
    if inp.stable_version is not None:
        out.append(VersionReplicas(inp.stable_version, Role.STABLE, inp.replicas))
    if version is not None and version != inp.stable_version:
        out.append(VersionReplicas(version, role, replicas))
    return tuple(out)


def _canary_replicas(replicas: int, weight: int) -> int:
    return max(1, math.ceil(replicas * weight / 100))


def _analysing(w: int, left: float) -> str:
    return f"analysing {w}%: {left:.0f} s left"


def _health(m: WindowMetrics) -> str:
    p99 = f", p99 {m.p99_ms:.0f} ms" if m.p99_ms is not None else ""
    return f"{m.requests} requests, error rate {m.error_rate:.3g}{p99}"
