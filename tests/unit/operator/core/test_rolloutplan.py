"""The control loop's rollout half on plain data: versions placed side by side, traffic split
by route weight, the old version kept until the new one succeeded, a rolled-back canary
unloaded while the stable version keeps serving."""

from __future__ import annotations

from typing import Any

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.edgemodel import Artifact, EdgeModelStatus
from hatswarm_operator.control.converters import routing_table
from hatswarm_operator.core.inventory import ModelObs, ModelState, NodeState
from hatswarm_operator.core.plan import PoolPlan
from hatswarm_operator.core.reconcile import plan_pool
from hatswarm_operator.core.rollout import Canary, GateVerdict, WindowMetrics
from hatswarm_operator.core.rolloutplan import (
    RolloutContext,
    RolloutMemory,
    counters,
    memory_from_status,
    window_metrics,
)

from tests.unit.operator.factories import (
    POOL_LABELS,
    cpu_artifact,
    make_model,
    make_node,
    make_pool,
)

FAILED, LOADING, READY = ModelState.FAILED, ModelState.LOADING, ModelState.READY

OLD_SHA, NEW_SHA = "1" * 64, "2" * 64
OLD_ART = Artifact(accelerator="cpu", format="onnx", uri="file:///v1.onnx", sha256=OLD_SHA)
GATE = {
    "samples": [
        {
            "inputs": [{"name": "x", "shape": [1, 2], "data": [1, 2]}],
            "expected": [{"name": "y", "shape": [1, 2], "data": [2, 4]}],
        }
    ]
}


def pool() -> InferencePool:
    return make_pool(generation=1, nodeSelector=POOL_LABELS, accelerators=["cpu"])


def model(version: str = "2", replicas: int = 2, **spec: Any) -> EdgeModel:
    rollout = {"steps": [50, 100], "canaryWeight": 50, "analysisWindowSeconds": 10}
    sha = NEW_SHA if version == "2" else OLD_SHA
    return make_model(
        version=version,
        replicas=replicas,
        generation=2,
        artifacts=[cpu_artifact(f"file:///v{version}.onnx", sha)],
        **{"rollout": rollout, **spec},
    )


def node(name: str, *loaded: tuple[str, ModelState], up: bool = True, **obs: Any) -> NodeState:
    models = (ModelObs("m", v, s, capacity_fps=100.0, **obs) for v, s in loaded)
    return make_node(name, *models, accelerator="cpu", up=up)


def ctx(
    canary: Canary | None = None,
    *,
    gate: GateVerdict | None = None,
    metrics: WindowMetrics | None = None,
    stable: str | None = "1",
) -> dict[str, RolloutContext]:
    memory = RolloutMemory(stable, canary, (OLD_ART,) if stable else ())
    return {"m": RolloutContext(memory, gate, metrics)}


def versions(plan: PoolPlan) -> dict[str, float]:
    return {r.version: r.weight for r in plan.routes}


def conds(plan: PoolPlan) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in plan.model_status["m"].conditions}


def test_new_version_starts_as_a_canary_beside_the_stable_one() -> None:
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY)), node("n3")]
    plan = plan_pool(pool(), [model()], nodes, now=100, rollouts=ctx())
    # one canary replica of 2 (ceil(2 * 50%)), the stable replicas stay where they are
    assert [(ld.node, ld.version, ld.artifact.uri) for ld in plan.loads] == [
        ("n3", "2", "file:///v2.onnx")
    ]
    assert plan.unloads == []
    # the canary is not ready: its share goes to the stable version
    assert versions(plan) == {"1": 50.0}
    st = plan.model_status["m"]
    assert st.stable_version == "1"
    assert st.canary is not None and (st.canary.phase, st.canary.weight) == ("Progressing", 50)
    assert st.phase == "Progressing"
    assert [e.reason for e in plan.rollout_events] == ["CanaryStarted"]
    assert plan.rollouts["m"].canary is not None
    assert plan.rollouts["m"].stable_artifacts == (OLD_ART,)


def test_canary_step_splits_traffic_by_route_weight() -> None:
    canary = Canary("2", "Progressing", 50, 0, started_at=100)
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY), ("2", READY))]
    plan = plan_pool(pool(), [model()], nodes, now=101, rollouts=ctx(canary))
    assert plan.loads == [] and plan.unloads == []
    assert versions(plan) == {"1": 50.0, "2": 50.0}
    eps = {r.version: sorted(e.node for e in r.endpoints) for r in plan.routes}
    assert eps == {"1": ["n1", "n2"], "2": ["n2"]}
    table = routing_table(pool(), plan.routes, 7)
    assert {(r.version, r.weight) for r in table.routes} == {("1", 50.0), ("2", 50.0)}
    st = plan.model_status["m"]
    shares = {(p.node, p.version): p.weight for p in st.placements}
    assert shares == {("n1", "1"): 25.0, ("n2", "1"): 25.0, ("n2", "2"): 50.0}
    assert (st.ready, st.version) == ("2/2", "1")
    assert conds(plan)["Progressing"][:2] == ("True", "CanaryProgressing")
    assert plan.rollout_events == []  # waiting for traffic is no transition


def test_version_under_validation_takes_no_traffic_and_asks_for_its_gate() -> None:
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY)), node("n3")]
    m = model(validation=GATE)
    plan = plan_pool(pool(), [m], nodes, now=100, rollouts=ctx())
    assert [(ld.node, ld.version) for ld in plan.loads] == [("n3", "2")]
    assert plan.gates == []  # not ready yet
    canary = plan.rollouts["m"].canary
    assert canary is not None and canary.phase == "Validating"

    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY)), node("n3", ("2", READY))]
    plan = plan_pool(pool(), [m], nodes, now=101, rollouts=ctx(canary))
    assert versions(plan) == {"1": 100.0}
    (req,) = plan.gates
    assert (req.model, req.version, req.node, req.key) == ("m", "2", "n3", 100)
    states = {(p.node, p.version): p.state for p in plan.model_status["m"].placements}
    assert states[("n3", "2")] == "Validating"
    assert conds(plan)["Progressing"][:2] == ("True", "Validating")


def test_failed_gate_rolls_back_unloads_the_canary_and_keeps_stable_serving() -> None:
    canary = Canary("2", "Validating", 0, 0, started_at=100)
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY)), node("n3", ("2", READY))]
    verdict = GateVerdict("2", False, "output y[0,1]: 9 vs expected 4")
    plan = plan_pool(
        pool(), [model(validation=GATE)], nodes, now=102, rollouts=ctx(canary, gate=verdict)
    )
    assert [(u.node, u.version) for u in plan.unloads] == [("n3", "2")]
    assert plan.loads == []
    assert versions(plan) == {"1": 100.0}
    ((type_, reason, message),) = [(e.type, e.reason, e.message) for e in plan.rollout_events]
    assert (type_, reason) == ("Warning", "RolledBack")
    assert "1 keeps serving" in message and "y[0,1]" in message
    st = plan.model_status["m"]
    assert (st.phase, st.ready, st.stable_version) == ("Degraded", "2/2", "1")
    assert st.canary is not None and st.canary.phase == "RolledBack"
    c = conds(plan)
    assert c["Progressing"][:2] == ("False", "RolledBack")
    assert c["Degraded"][:2] == ("True", "RolledBack")
    assert "validation gate failed" in c["Degraded"][2]
    assert c["Ready"][0] == "True"

    # The remembered failure holds: no retry, nothing routed to 2, 2 stays unloaded.
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY)), node("n3")]
    again = plan_pool(
        pool(), [model(validation=GATE)], nodes, now=103, rollouts=ctx(plan.rollouts["m"].canary)
    )
    assert again.loads == [] and again.unloads == [] and again.rollout_events == []
    assert versions(again) == {"1": 100.0}


def test_error_rate_breach_rolls_back_only_the_canary() -> None:
    canary = Canary("2", "Progressing", 50, 0, started_at=100)
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY), ("2", READY))]
    bad = WindowMetrics(requests=40, errors=10)
    plan = plan_pool(pool(), [model()], nodes, now=101, rollouts=ctx(canary, metrics=bad))
    assert [(u.node, u.version) for u in plan.unloads] == [("n2", "2")]
    assert versions(plan) == {"1": 100.0}
    assert "error rate 0.25 > 0.05" in conds(plan)["Degraded"][2]


def test_old_version_is_kept_until_the_new_one_succeeded_on_every_replica() -> None:
    canary = Canary("2", "Progressing", 50, 0, started_at=100)
    healthy = WindowMetrics(requests=50, errors=0, p99_ms=3.0)
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY), ("2", READY))]
    # The last step's window is over, but 2 runs on 1 of 2 replicas: load it, unload nothing.
    plan = plan_pool(pool(), [model()], nodes, now=111, rollouts=ctx(canary, metrics=healthy))
    assert [(ld.node, ld.version) for ld in plan.loads] == [("n1", "2")]
    assert plan.unloads == []
    assert versions(plan) == {"1": 50.0, "2": 50.0}
    held = plan.rollouts["m"].canary
    assert held is not None and held.phase == "Progressing"

    nodes = [node("n1", ("1", READY), ("2", READY)), node("n2", ("1", READY), ("2", READY))]
    plan = plan_pool(pool(), [model()], nodes, now=112, rollouts=ctx(held, metrics=healthy))
    assert plan.model_status["m"].stable_version == "2"
    assert versions(plan) == {"2": 100.0}
    assert sorted((u.node, u.version) for u in plan.unloads) == [("n1", "1"), ("n2", "1")]
    assert [e.reason for e in plan.rollout_events] == ["RolloutSucceeded"]
    st = plan.model_status["m"]
    assert (st.phase, st.version) == ("Ready", "2")
    assert [a.uri for a in st.stable_artifacts or []] == ["file:///v2.onnx"]


def test_stable_version_is_re_placed_from_its_remembered_artifacts() -> None:
    canary = Canary("2", "Progressing", 50, 0, started_at=100)
    nodes = [
        node("n1", ("1", READY), up=False),
        node("n2", ("1", READY), ("2", READY)),
        node("n3"),
    ]
    plan = plan_pool(pool(), [model()], nodes, now=101, rollouts=ctx(canary))
    assert [(ld.node, ld.version, ld.artifact.sha256) for ld in plan.loads] == [
        ("n3", "1", OLD_SHA)
    ]


def test_stable_version_without_known_artifacts_is_held_where_it_runs() -> None:
    canary = Canary("2", "Progressing", 50, 0, started_at=100)
    memory = RolloutMemory("1", canary, ())
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY), ("2", READY))]
    plan = plan_pool(pool(), [model()], nodes, now=101, rollouts={"m": RolloutContext(memory)})
    assert plan.loads == [] and plan.unloads == []
    assert versions(plan) == {"1": 50.0, "2": 50.0}


def test_recreate_unloads_the_old_version_first() -> None:
    m = model(rollout={"strategy": "Recreate"})
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY))]
    plan = plan_pool(pool(), [m], nodes, now=100, rollouts=ctx())
    assert sorted((u.node, u.version) for u in plan.unloads) == [("n1", "1"), ("n2", "1")]
    assert sorted((ld.node, ld.version) for ld in plan.loads) == [("n1", "2"), ("n2", "2")]
    assert plan.model_status["m"].stable_version == "2"


def test_first_deployment_with_a_gate_serves_nothing_before_it_passed() -> None:
    m = model(version="1", replicas=1, validation=GATE)
    plan = plan_pool(pool(), [m], [node("n1", ("1", READY))], now=100, rollouts=ctx(stable=None))
    assert plan.routes == []
    canary = plan.rollouts["m"].canary
    assert canary is not None and canary.phase == "Validating"
    passed = GateVerdict("1", True, "1 sample within tolerance")
    plan = plan_pool(
        pool(), [m], [node("n1", ("1", READY))], now=101,
        rollouts=ctx(canary, gate=passed, stable=None),
    )  # fmt: skip
    assert versions(plan) == {"1": 100.0}
    assert [e.reason for e in plan.rollout_events] == ["ValidationPassed", "RolloutSucceeded"]


def test_rollout_memory_round_trips_through_status() -> None:
    canary = Canary("2", "Progressing", 50, 0, started_at=100)
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY), ("2", LOADING))]
    plan = plan_pool(pool(), [model()], nodes, now=101, rollouts=ctx(canary))
    wire = plan.model_status["m"].wire()
    assert wire["stableArtifacts"][0]["uri"] == "file:///v1.onnx"
    back = memory_from_status(EdgeModelStatus.model_validate(wire))
    assert back.stable_version == "1"
    assert back.stable_artifacts == (OLD_ART,)
    assert back.canary is not None and (back.canary.version, back.canary.step) == ("2", 0)
    # without runtime memory, the model's status is where the rollout continues from
    m = model().model_copy(update={"status": EdgeModelStatus.model_validate(wire)})
    again = plan_pool(pool(), [m], nodes, now=102)
    assert again.rollout_events == []
    assert again.model_status["m"].canary is not None


def test_window_metrics_are_counter_deltas_and_survive_a_reset() -> None:
    before = [
        node("n1", ("1", READY), request_success=100, request_failure=1),
        node("n2", ("2", READY), request_success=50, request_failure=5),
    ]
    since = counters(before, "m")
    after = [
        node("n1", ("1", READY), request_success=130, request_failure=1, p99_ms=4.0),
        # the agent restarted: its counters start over
        node("n2", ("2", READY), request_success=8, request_failure=2, p99_ms=9.0),
    ]
    assert window_metrics(after, "m", "1", since) == WindowMetrics(30, 0, 4.0)
    assert window_metrics(after, "m", "2", since) == WindowMetrics(10, 2, 9.0)
    assert window_metrics(after, "m", "3", since) == WindowMetrics(0, 0, None)


def test_an_artifact_that_fails_verification_fails_the_gate() -> None:
    canary = Canary("2", "Validating", 0, 0, started_at=100)
    bad = NodeState(
        name="n3",
        address="127.0.0.1:9003",
        labels={"pool": "p"},
        accelerator="cpu",
        up=True,
        models=(ModelObs("m", "2", FAILED, reason="sha256 mismatch: expected 222 got 999"),),
    )
    nodes = [node("n1", ("1", READY)), node("n2", ("1", READY)), bad]
    plan = plan_pool(pool(), [model(validation=GATE)], nodes, now=101, rollouts=ctx(canary))
    st = plan.model_status["m"]
    assert st.canary is not None and st.canary.phase == "RolledBack"
    assert "artifact rejected on n3: sha256 mismatch" in (st.canary.message or "")
    assert [(u.node, u.version) for u in plan.unloads] == [("n3", "2")]
    assert versions(plan) == {"1": 100.0}
