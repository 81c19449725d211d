"""Rollout invariants over random histories: spec edits, gate verdicts, metrics and time."""

from __future__ import annotations

from hatswarm_operator.core.rollout import (
    Canary,
    GateVerdict,
    RolloutInput,
    RolloutPolicy,
    WindowMetrics,
    decide_rollout,
)
from hypothesis import given, settings
from hypothesis import strategies as st

VERSIONS = ("a", "b", "c")

policies = st.builds(
    RolloutPolicy,
    strategy=st.sampled_from(["Canary", "Recreate"]),
    canary_weight=st.integers(0, 100),
    steps=st.lists(st.integers(1, 100), max_size=5).map(tuple),
    analysis_window_seconds=st.sampled_from([1.0, 30.0, 60.0]),
    max_error_rate=st.sampled_from([0.0, 0.02, 0.5]),
    max_p99_latency_ms=st.sampled_from([None, 50.0]),
    gate=st.booleans(),
)
events = st.one_of(
    st.tuples(st.just("spec"), st.sampled_from(VERSIONS)),
    st.tuples(st.just("gate"), st.tuples(st.sampled_from(VERSIONS), st.booleans())),
    st.tuples(
        st.just("metrics"),
        st.builds(
            WindowMetrics,
            requests=st.integers(0, 40),
            errors=st.integers(0, 4),
            p99_ms=st.one_of(st.none(), st.floats(1.0, 100.0)),
        ),
    ),
    st.tuples(st.just("wait"), st.floats(0.0, 90.0)),
)


@settings(max_examples=300, deadline=None)
@given(
    policy=policies,
    stable=st.one_of(st.none(), st.sampled_from(VERSIONS)),
    history=st.lists(events, max_size=30),
    replicas=st.integers(1, 6),
)
def test_weights_and_gate_invariants(
    policy: RolloutPolicy,
    stable: str | None,
    history: list[tuple[str, object]],
    replicas: int,
) -> None:
    version = stable or "a"
    canary: Canary | None = None
    now = 0.0
    passed_gate: set[str] = set()  # versions that passed the gate since spec last moved to them
    for kind, arg in history:
        gate: GateVerdict | None = None
        metrics: WindowMetrics | None = None
        if kind == "spec":
            assert isinstance(arg, str)
            if arg != version:
                passed_gate.discard(arg)
            version = arg
        elif kind == "gate":
            assert isinstance(arg, tuple)
            gate = GateVerdict(arg[0], arg[1], "verdict")
        elif kind == "metrics":
            assert isinstance(arg, WindowMetrics)
            metrics = arg
        else:
            assert isinstance(arg, float)
            now += arg
        before = stable
        d = decide_rollout(
            RolloutInput(version, stable, canary, policy, now, replicas, gate, metrics)
        )
        if (
            gate is not None
            and gate.passed
            and canary is not None
            and canary.phase == "Validating"
            and canary.version == gate.version
        ):
            passed_gate.add(gate.version)

        w = dict(d.weights)
        # Weights sum to 100, or nothing serves because no version is stable yet.
        assert sum(w.values()) == 100 or (w == {} and d.stable_version is None)
        assert all(0 < x <= 100 for x in w.values())
        # Only the stable version and the canary take traffic.
        allowed = {d.stable_version} | ({d.canary.version} if d.canary else set())
        assert set(w) <= allowed
        # The stable version keeps serving unless the new version just succeeded.
        if before is not None and w.get(before, 0) == 0:
            assert d.canary is not None
            assert d.canary.phase == "Succeeded"
            assert d.stable_version == d.canary.version == version
        # With a gate, no version takes traffic (or becomes stable) before passing it.
        if policy.gate:
            for v in (set(w) | {d.stable_version}) - {before, None}:
                assert v == before or v in passed_gate
        # A rolled-back canary takes no traffic and is not loaded.
        if d.canary is not None and d.canary.phase == "RolledBack":
            assert d.canary.version not in w
            assert all(load.version != d.canary.version for load in d.loads)
        # Loads cover every version with weight.
        assert set(w) <= {load.version for load in d.loads}
        stable, canary = d.stable_version, d.canary
