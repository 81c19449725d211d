"""The shared control loop's decisions, on plain data: no agents, no cluster."""

from __future__ import annotations

from typing import Any

from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.control.converters import node_report
from hatswarm_operator.core.inventory import ModelObs, ModelState, NodeState, observe
from hatswarm_operator.core.reconcile import plan_pool

from tests.unit.operator.factories import POOL_LABELS, make_model, make_node, make_pool

FAILED, READY = ModelState.FAILED, ModelState.READY


def pool(**spec: Any) -> InferencePool:
    return make_pool(generation=1, nodeSelector=POOL_LABELS, **spec)


def model(name: str = "m", version: str = "1", replicas: int = 2, **spec: Any) -> EdgeModel:
    return make_model(name, version=version, replicas=replicas, generation=3, **spec)


def node(name: str, *loaded: tuple[str, str, ModelState], up: bool = True, **kw: Any) -> NodeState:
    return make_node(
        name, *(ModelObs(m, v, s, capacity_fps=100.0) for m, v, s in loaded), up=up, **kw
    )


def test_first_reconcile_loads_desired_replicas_and_reports_progress() -> None:
    plan = plan_pool(pool(), [model()], [node("n1"), node("n2"), node("n3")], now=0)
    assert len(plan.loads) == 2
    assert len({ld.node for ld in plan.loads}) == 2
    assert plan.unloads == []
    (route,) = plan.routes
    assert route.endpoints == ()
    st = plan.model_status["m"]
    assert (st.ready, st.phase, st.observed_generation) == ("0/2", "Progressing", 3)
    assert plan.pool_status.nodes_ready == 3


def test_converged_pool_routes_to_ready_replicas_and_is_ready() -> None:
    nodes = [node("n1", ("m", "1", READY)), node("n2", ("m", "1", READY)), node("n3")]
    plan = plan_pool(pool(), [model()], nodes, now=0)
    assert plan.loads == []
    assert plan.unloads == []
    assert sorted(e.node for e in plan.routes[0].endpoints) == ["n1", "n2"]
    st = plan.model_status["m"]
    assert (st.ready, st.phase) == ("2/2", "Ready")
    assert {c.type: c.status for c in st.conditions}["Ready"] == "True"


def test_p99_is_absent_until_something_was_measured() -> None:
    """A replica that served nothing reports p99 0.0: that is no measurement, not 0 ms."""
    idle = [node("n1", ("m", "1", READY)), node("n2", ("m", "1", READY))]
    assert plan_pool(pool(), [model()], idle, now=0).model_status["m"].p99_latency_ms is None
    busy = [
        make_node("n1", ModelObs("m", "1", READY, capacity_fps=100.0, p99_ms=7.5)),
        node("n2", ("m", "1", READY)),
    ]
    assert plan_pool(pool(), [model()], busy, now=0).model_status["m"].p99_latency_ms == 7.5


def test_lost_node_moves_only_its_replica() -> None:
    nodes = [
        node("n1", ("m", "1", READY), up=False),
        node("n2", ("m", "1", READY)),
        node("n3"),
    ]
    plan = plan_pool(pool(), [model()], nodes, now=0)
    assert [(ld.node, ld.model) for ld in plan.loads] == [("n3", "m")]
    assert [e.node for e in plan.routes[0].endpoints] == ["n2"]
    assert plan.pool_status.nodes_ready == 2


def test_cordoned_node_leaves_the_pool_at_once() -> None:
    nodes = [node("n1", ("m", "1", READY), schedulable=False), node("n2", ("m", "1", READY))]
    plan = plan_pool(pool(), [model()], [*nodes, node("n3")], now=0)
    assert [e.node for e in plan.routes[0].endpoints] == ["n2"]
    assert [ld.node for ld in plan.loads] == ["n3"]
    # n2 still serves, so the cordoned node's copy may go (it takes no traffic any more)
    assert [(u.node, u.model) for u in plan.unloads] == [("n1", "m")]


def test_never_unloads_the_last_ready_replica_before_its_replacement() -> None:
    nodes = [node("n1", ("m", "1", READY), schedulable=False), node("n2")]
    plan = plan_pool(pool(), [model(replicas=1)], nodes, now=0)
    assert [ld.node for ld in plan.loads] == ["n2"]
    assert plan.unloads == []


def test_deleted_model_is_unloaded_everywhere() -> None:
    nodes = [node("n1", ("gone", "1", READY)), node("n2", ("gone", "1", READY))]
    plan = plan_pool(pool(), [], nodes, now=0)
    assert sorted(u.node for u in plan.unloads) == ["n1", "n2"]


def test_old_version_keeps_serving_until_the_new_one_is_ready() -> None:
    nodes = [node("n1", ("m", "1", READY)), node("n2")]
    plan = plan_pool(pool(), [model(version="2", replicas=1)], nodes, now=0)
    assert plan.unloads == []
    assert len(plan.loads) == 1
    nodes = [node("n1", ("m", "1", READY), ("m", "2", READY)), node("n2")]
    plan = plan_pool(pool(), [model(version="2", replicas=1)], nodes, now=0)
    assert [(u.node, u.version) for u in plan.unloads] == [("n1", "1")]


def test_failed_load_is_surfaced_with_its_reason() -> None:
    n1 = NodeState(
        name="n1",
        address="a:1",
        labels={"pool": "p"},
        up=True,
        models=(ModelObs("m", "1", FAILED, reason="sha256 mismatch: expected aaa got bbb"),),
    )
    plan = plan_pool(pool(), [model(replicas=1)], [n1], now=0)
    st = plan.model_status["m"]
    conds = {c.type: c for c in st.conditions}
    assert conds["ArtifactVerified"].status == "False"
    assert "sha256 mismatch" in conds["ArtifactVerified"].message
    assert st.phase == "Failed"


def test_unplaceable_model_gets_a_reason_and_an_event() -> None:
    m = model(placement={"nodeSelector": {"line": "nowhere"}})
    plan = plan_pool(pool(), [m], [node("n1")], now=0)
    assert plan.events
    assert plan.events[0].type == "Warning"
    degraded = {c.type: c for c in plan.model_status["m"].conditions}["Degraded"]
    assert degraded.status == "True"
    assert degraded.reason == plan.events[0].reason


def test_scale_override_and_clamp() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    assert len(plan_pool(pool(), [model(replicas=2)], nodes, now=0, replicas={"m": 3}).loads) == 3
    m = model(replicas=1)
    m.spec.replicas.desired = 9  # `kubectl scale --replicas=9` beyond max=5 is clamped
    assert m.spec.replicas.target() == 5
    plan = plan_pool(pool(), [m], nodes, now=0)
    assert plan.model_status["m"].desired_replicas == 5
    assert len(plan.loads) == 3  # one per node: never two replicas of a model on one node


def test_cost_status_from_the_pool_cost_block() -> None:
    nodes = [node("n1", ("m", "1", READY))]
    st = plan_pool(pool(), [model(replicas=1)], nodes, now=0).pool_status
    assert st.cost.per_device_year_usd == 138.85  # the seed's device, exact arithmetic
    assert st.cost.energy_source == "nameplate"


def test_observe_drops_a_node_after_the_failure_threshold() -> None:
    n = NodeState(name="n1", address="a:1")
    status = control_pb2.NodeStatusResponse(accelerator="hailo8", temperature_c=float("nan"))
    n = observe(n, node_report(status), now=1.0, failure_threshold=3)
    assert n.up
    assert n.accelerator == "hailo8"
    assert n.temperature_c is None
    for i in range(2):
        n = observe(n, None, now=2.0 + i, failure_threshold=3, error="UNAVAILABLE")
        assert n.up
    n = observe(n, None, now=5.0, failure_threshold=3, error="UNAVAILABLE")
    assert not n.up
    assert n.out_reason.startswith("AgentUnreachable")
    assert observe(n, node_report(status), now=6.0, failure_threshold=3).up
