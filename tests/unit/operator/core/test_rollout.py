"""Canary rollout: each rule of the state machine pinned by a short scripted history."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hatswarm_operator.api.edgemodel import CanaryStatus, EdgeModelSpec
from hatswarm_operator.core.rollout import (
    Canary,
    GateVerdict,
    Role,
    RolloutDecision,
    RolloutInput,
    RolloutPolicy,
    VersionReplicas,
    WindowMetrics,
    decide_rollout,
)
from hatswarm_operator.core.rolloutplan import (
    canary_from_status,
    canary_to_status,
    policy_from_spec,
)

GATED = RolloutPolicy(
    steps=(10, 50, 100), analysis_window_seconds=60, max_error_rate=0.02, max_p99_latency_ms=80,
    gate=True,
)  # fmt: skip
HEALTHY = WindowMetrics(requests=200, errors=1, p99_ms=40.0)


@dataclass
class Model:
    """An EdgeModel's rollout-relevant spec and status, advanced the way a controller would."""

    policy: RolloutPolicy = GATED
    version: str = "v2"
    stable: str | None = "v1"
    canary: Canary | None = None
    replicas: int = 4
    now: float = 1000.0
    log: list[RolloutDecision] = field(default_factory=list)

    def tick(
        self,
        dt: float = 0.0,
        *,
        gate: GateVerdict | None = None,
        metrics: WindowMetrics | None = None,
        ready: int | None = None,
    ) -> RolloutDecision:
        self.now += dt
        d = decide_rollout(
            RolloutInput(
                version=self.version,
                stable_version=self.stable,
                canary=self.canary,
                policy=self.policy,
                now=self.now,
                replicas=self.replicas,
                gate=gate,
                canary_metrics=metrics,
                stable_metrics=WindowMetrics(1000, 5, 30.0),
                canary_ready=ready,
            )
        )
        self.stable, self.canary = d.stable_version, d.canary
        self.log.append(d)
        return d

    def events(self) -> list[str]:
        return [e.reason for d in self.log for e in d.events]


def passed(version: str = "v2") -> GateVerdict:
    return GateVerdict(version, True, "1 sample within atol 0.001")


def test_happy_path_through_every_step() -> None:
    m = Model()
    d = m.tick()
    assert m.canary is not None
    assert (m.canary.phase, m.canary.weight) == ("Validating", 0)
    assert d.weights == {"v1": 100}
    assert d.loads == (
        VersionReplicas("v1", Role.STABLE, 4),
        VersionReplicas("v2", Role.VALIDATION, 1),
    )

    d = m.tick(5, gate=passed())
    assert (m.canary.phase, m.canary.step, m.canary.weight) == ("Progressing", 0, 10)
    assert d.weights == {"v1": 90, "v2": 10}
    assert d.loads == (VersionReplicas("v1", Role.STABLE, 4), VersionReplicas("v2", Role.CANARY, 1))
    assert d.requeue_after == 60

    d = m.tick(30, metrics=HEALTHY)
    assert (m.canary.phase, m.canary.weight, d.requeue_after) == ("Progressing", 10, 30)
    assert d.events == ()

    d = m.tick(30, metrics=HEALTHY)
    assert (m.canary.step, m.canary.weight, m.canary.started_at) == (1, 50, m.now)
    assert d.weights == {"v1": 50, "v2": 50}
    assert d.loads[1] == VersionReplicas("v2", Role.CANARY, 2)
    assert d.events[0].message.startswith("v2 10% -> 50% after 60 s: 200 requests")

    d = m.tick(60, metrics=HEALTHY)
    assert m.stable == "v2"
    assert m.canary is not None
    assert m.canary.phase == "Succeeded"
    assert d.weights == {"v2": 100}
    assert d.loads == (VersionReplicas("v2", Role.STABLE, 4),)
    assert d.unloads == ("v1",)
    assert not d.unload_first
    assert m.events() == [
        "ValidationStarted", "ValidationPassed", "CanaryStarted", "CanaryStepped",
        "RolloutSucceeded",
    ]  # fmt: skip

    # Steady afterwards: nothing moves, nothing is announced.
    d = m.tick(600)
    assert (d.stable_version, d.weights, d.events) == ("v2", {"v2": 100}, ())


def test_gate_failure_never_takes_traffic_and_is_not_retried() -> None:
    m = Model()
    m.tick()
    d = m.tick(5, gate=GateVerdict("v2", False, "missing output 'probabilities'"))
    assert m.canary is not None
    assert m.canary.phase == "RolledBack"
    assert m.canary.message == "validation gate failed: missing output 'probabilities'"
    assert d.weights == {"v1": 100}
    assert d.loads == (VersionReplicas("v1", Role.STABLE, 4),)
    assert d.unloads == ("v2",)
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "RolledBack")]
    assert "v1 keeps serving" in d.events[0].message

    # Not retried while spec.version stays v2, whatever arrives later.
    for _ in range(3):
        d = m.tick(600, gate=passed(), metrics=HEALTHY)
        assert (d.weights, d.events, m.canary.phase) == ({"v1": 100}, (), "RolledBack")
        assert all(load.version == "v1" for load in d.loads)


def progressing(policy: RolloutPolicy = GATED) -> Model:
    m = Model(policy=policy)
    m.tick()
    m.tick(1, gate=passed())
    return m


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        (WindowMetrics(100, 8, 40.0), "error rate 0.08 > 0.02 (stable 0.005)"),
        (WindowMetrics(100, 0, 120.0), "p99 120 ms > 80 ms (stable 30 ms)"),
    ],
)
def test_breach_rolls_back_at_once_and_stable_keeps_everything(
    metrics: WindowMetrics, reason: str
) -> None:
    m = progressing()
    m.tick(60, metrics=HEALTHY)  # now at 50%
    d = m.tick(10, metrics=metrics)  # mid-window: a breach does not wait for the window's end
    assert m.canary is not None
    assert (m.canary.phase, m.canary.message) == ("RolledBack", reason)
    assert (m.stable, d.weights) == ("v1", {"v1": 100})
    assert d.unloads == ("v2",)
    assert d.events[0].message == f"v2 rolled back, v1 keeps serving: {reason}"


def test_too_few_requests_waits_instead_of_passing_or_failing() -> None:
    m = progressing()
    for dt, metrics in [(600, WindowMetrics(5, 5)), (600, None), (600, WindowMetrics(9))]:
        d = m.tick(dt, metrics=metrics)
        assert m.canary is not None
        assert (m.canary.phase, m.canary.weight) == ("Progressing", 10)
        assert d.weights == {"v1": 90, "v2": 10}
        assert m.canary.message is not None
        assert m.canary.message.startswith("waiting for traffic at 10%")
    m.tick(1, metrics=WindowMetrics(10))  # window long over, enough traffic: next step
    assert m.canary is not None
    assert m.canary.weight == 50


def test_recreate_runs_the_gate_then_replaces_stable_in_one_go() -> None:
    m = Model(policy=replace(GATED, strategy="Recreate"))
    assert m.tick().weights == {"v1": 100}
    d = m.tick(1, gate=passed())
    assert (m.stable, d.weights, d.unloads, d.unload_first) == ("v2", {"v2": 100}, ("v1",), True)
    assert m.canary is not None
    assert m.canary.phase == "Succeeded"

    ungated = Model(policy=replace(GATED, strategy="Recreate", gate=False))
    d = ungated.tick()
    assert (ungated.stable, d.weights, d.unload_first) == ("v2", {"v2": 100}, True)


def test_first_deployment_goes_straight_to_stable_after_the_gate() -> None:
    m = Model(stable=None)
    d = m.tick()
    assert (d.weights, d.loads) == ({}, (VersionReplicas("v2", Role.VALIDATION, 1),))
    d = m.tick(1, gate=passed())
    assert (m.stable, d.weights, d.unloads) == ("v2", {"v2": 100}, ())
    assert d.loads == (VersionReplicas("v2", Role.STABLE, 4),)

    failed = Model(stable=None)
    failed.tick()
    d = failed.tick(1, gate=GateVerdict("v2", False, "latency 73 ms > limit 50 ms"))
    assert (failed.stable, d.weights) == (None, {})
    assert "no version serves yet" in d.events[0].message

    ungated = Model(stable=None, policy=replace(GATED, gate=False))
    assert ungated.tick().weights == {"v2": 100}
    assert ungated.stable == "v2"


def test_without_a_gate_the_canary_starts_at_once() -> None:
    m = Model(policy=replace(GATED, gate=False, canary_weight=5))
    d = m.tick()
    assert d.weights == {"v1": 95, "v2": 5}
    assert m.events() == ["CanaryStarted"]


def test_rolled_back_version_is_retried_only_after_spec_version_changes() -> None:
    m = progressing()
    m.tick(60, metrics=WindowMetrics(100, 50))
    assert m.canary is not None
    assert m.canary.phase == "RolledBack"

    m.version = "v1"  # the user reverts spec.version: the memory of v2's failure is cleared
    d = m.tick(1)
    assert m.canary is None
    assert (d.weights, d.unloads) == ({"v1": 100}, ("v2",))

    m.version = "v2"  # and tries again: a new rollout
    m.tick(1)
    assert m.canary is not None
    assert (m.canary.version, m.canary.phase) == ("v2", "Validating")

    m.tick(1, gate=GateVerdict("v2", False, "bad"))
    m.version = "v3"  # a different version starts its own rollout right away
    m.tick(1)
    assert (m.canary.version, m.canary.phase) == ("v3", "Validating")


def test_new_version_during_a_rollout_restarts_the_canary() -> None:
    m = progressing()
    m.tick(60, metrics=HEALTHY)
    m.version = "v3"
    d = m.tick(1, metrics=HEALTHY)
    assert m.canary is not None
    assert (m.canary.version, m.canary.phase, m.canary.started_at) == ("v3", "Validating", m.now)
    assert d.weights == {"v1": 100}
    assert d.unloads == ("v2",)
    assert [e.reason for e in d.events] == ["CanarySuperseded", "ValidationStarted"]
    # A late verdict for the superseded version is ignored.
    m.tick(1, gate=passed("v2"))
    assert m.canary.phase == "Validating"
    m.tick(1, gate=passed("v3"))
    assert (m.canary.version, m.canary.phase) == ("v3", "Progressing")


def test_spec_back_on_stable_abandons_the_canary() -> None:
    m = progressing()
    m.version = "v1"
    d = m.tick(1)
    assert m.canary is None
    assert (d.weights, d.unloads) == ({"v1": 100}, ("v2",))
    assert [e.reason for e in d.events] == ["RolloutAborted"]


def test_promotion_waits_for_the_canary_to_be_ready_everywhere() -> None:
    m = progressing(replace(GATED, steps=(10,)))
    d = m.tick(60, metrics=HEALTHY, ready=1)
    assert m.stable == "v1"
    assert d.weights == {"v1": 90, "v2": 10}
    assert d.loads == (VersionReplicas("v1", Role.STABLE, 4), VersionReplicas("v2", Role.CANARY, 4))
    assert m.canary is not None
    assert m.canary.message == "promoting: v2 ready on 1/4 replicas"
    d = m.tick(5, metrics=HEALTHY, ready=4)
    assert (m.stable, d.weights) == ("v2", {"v2": 100})


def test_weights_schedule() -> None:
    assert RolloutPolicy(canary_weight=10, steps=(10, 50, 100)).weights() == (10, 50)
    assert RolloutPolicy(canary_weight=5, steps=(50, 20)).weights() == (5, 20, 50)
    assert RolloutPolicy(canary_weight=0, steps=(100,)).weights() == ()
    m = Model(policy=replace(GATED, canary_weight=0, steps=(100,), gate=False))
    assert m.tick().weights == {"v2": 100}  # nothing to analyse below 100%: promote


def test_adapters_round_trip() -> None:
    spec = EdgeModelSpec.model_validate(
        {
            "pool": "p",
            "version": "v2",
            "artifacts": [{"accelerator": "cpu", "format": "onnx", "uri": "https://x/m.onnx",
                           "sha256": "0" * 64}],
            "rollout": {"strategy": "Canary", "canaryWeight": 5, "steps": [5, 25, 100],
                        "analysisWindowSeconds": 30,
                        "rollback": {"maxErrorRate": 0.02, "maxP99LatencyMs": 80}},
        }
    )  # fmt: skip
    assert policy_from_spec(spec) == RolloutPolicy("Canary", 5, (5, 25, 100), 30.0, 0.02, 80.0)
    c = Canary("v2", "Progressing", 25, 1, 1_700_000_000.0, "analysing")
    status = canary_to_status(c)
    assert status == CanaryStatus(
        version="v2", weight=25, step=1, phase="Progressing",
        started_at="2023-11-14T22:13:20Z", message="analysing",
    )  # fmt: skip
    assert canary_from_status(status) == c
    assert canary_from_status(None) is None
