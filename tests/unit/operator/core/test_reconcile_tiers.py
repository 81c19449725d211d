"""The control loop's adapter and escalation decisions (core.reconcile, the routing table)."""

from __future__ import annotations

from typing import Any

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.control.converters import routing_table
from hatswarm_operator.core.inventory import ModelObs, ModelState, NodeState
from hatswarm_operator.core.plan import AdapterRef
from hatswarm_operator.core.reconcile import plan_pool

from tests.unit.operator.factories import POOL_LABELS, make_model, make_node, make_pool


def pool() -> InferencePool:
    return make_pool(generation=1, nodeSelector=POOL_LABELS)


def model(name: str = "m", replicas: int = 3, **spec: Any) -> EdgeModel:
    return make_model(name, replicas=replicas, **spec)


def adapters(n: int) -> list[dict[str, str]]:
    return [
        {"name": f"a{i}", "uri": f"file:///a{i}.onnx_adapter", "sha256": f"{i:x}" * 64}
        for i in range(n)
    ]


def node(name: str, *models: ModelObs) -> NodeState:
    return make_node(name, *models)


def ready(**kw: Any) -> ModelObs:
    return ModelObs("m", "1", ModelState.READY, capacity_fps=100.0, **kw)


def test_loads_carry_every_adapter_when_each_node_has_the_slots() -> None:
    plan = plan_pool(pool(), [model(adapters=adapters(3))], [node(f"n{i}") for i in range(3)], 0)
    assert len(plan.loads) == 3
    for ld in plan.loads:
        assert [a.name for a in ld.adapters] == ["a0", "a1", "a2"]
        assert ld.adapters[1] == AdapterRef("a1", "file:///a1.onnx_adapter", "1" * 64)
        assert not ld.adapters_only


def test_more_adapters_than_slots_spread_by_measured_share() -> None:
    requests = (("a0", 900), ("a1", 50), ("a2", 50))
    nodes = [
        node(f"n{i}", ready(adapter_slots=2, adapters=("a0",), adapter_requests=requests))
        for i in range(3)
    ]
    plan = plan_pool(pool(), [model(adapters=adapters(4))], nodes, 0)
    assert len(plan.loads) == 3 and all(ld.adapters_only for ld in plan.loads)
    carried = {ld.node: {a.name for a in ld.adapters} for ld in plan.loads}
    assert all(len(c) == 2 for c in carried.values())
    assert all("a0" in c for c in carried.values())  # the hot one everywhere
    assert set().union(*carried.values()) == {"a0", "a1", "a2", "a3"}


def test_a_replica_with_the_planned_adapters_is_left_alone() -> None:
    nodes = [node(f"n{i}", ready(adapters=("a0", "a1"), adapter_slots=4)) for i in range(3)]
    assert plan_pool(pool(), [model(adapters=adapters(2))], nodes, 0).loads == []


def test_endpoints_report_resident_adapters_and_free_slots() -> None:
    nodes = [
        node("n1", ready(adapters=("a0", "a1"), resident_adapters=("a1",), adapter_slots=4)),
        node("n2", ready(adapters=("a0", "a1"), resident_adapters=("a0", "a1"), adapter_slots=2)),
        node("n3", ready(adapters=("a0", "a1"), adapter_slots=4)),
    ]
    plan = plan_pool(pool(), [model(adapters=adapters(2))], nodes, 0)
    eps = {e.node: e for e in plan.routes[0].endpoints}
    assert (eps["n1"].adapters, eps["n1"].adapter_slots_free) == (("a1",), 3)
    assert (eps["n2"].adapters, eps["n2"].adapter_slots_free) == (("a0", "a1"), 0)
    assert eps["n3"].adapters_known == ("a0", "a1")
    table = routing_table(pool(), plan.routes, 7)
    (ep,) = [e for e in table.routes[0].endpoints if e.node == "n1"]
    assert (list(ep.adapters), ep.adapter_slots_free, list(ep.adapters_known)) == (
        ["a1"],
        3,
        ["a0", "a1"],
    )


def test_escalation_rule_reaches_the_route_and_the_table() -> None:
    esc = {"output": "probs", "threshold": 0.8, "target": {"model": "big"}}
    nodes = [node(f"n{i}", ready()) for i in range(3)]
    plan = plan_pool(pool(), [model(escalation=esc)], nodes, 0)
    (r,) = plan.routes
    assert (r.escalation_output, r.escalation_threshold, r.escalation_model) == (
        "probs",
        0.8,
        "big",
    )
    table = routing_table(pool(), plan.routes, 1)
    t = table.routes[0]
    assert (t.escalation_output, t.escalation_model, t.escalation_cloud) == ("probs", "big", False)
    cloud = {"output": "probs", "threshold": 0.5, "target": {"cloud": True}}
    (r,) = plan_pool(pool(), [model(escalation=cloud)], nodes, 0).routes
    assert r.escalation_cloud and r.escalation_model == ""


def test_generation_escalation_and_token_prices_reach_the_table() -> None:
    cloud = {"allowed": True, "cloudModel": "big-llm", "longPrompts": True, "minMeanLogprob": -2.5}
    nodes = [node(f"n{i}", ready()) for i in range(3)]
    (r,) = plan_pool(pool(), [model(cloudFallback=cloud)], nodes, 0).routes
    assert (r.cloud_model, r.escalate_long_prompts) == ("big-llm", True)
    assert (r.escalation_min_mean_logprob, r.escalation_logprob_tokens) == (-2.5, 16)
    priced = make_pool(
        generation=1,
        nodeSelector=POOL_LABELS,
        cloudFallback={
            "openai": {
                "baseUrl": "https://llm.example/v1",
                "model": "small",
                "pricePer1MInputUsd": 0.15,
                "pricePer1MOutputUsd": 0.6,
            },
            "maxShare": 0.2,
        },
    )
    table = routing_table(priced, [r], 1)
    t, c = table.routes[0], table.cloud
    assert (t.cloud_model, t.escalate_long_prompts, t.escalation_logprob_tokens) == (
        "big-llm",
        True,
        16,
    )
    assert t.escalation_min_mean_logprob == -2.5
    assert (c.endpoint, c.openai_base_url, c.openai_model) == (
        "",
        "https://llm.example/v1",
        "small",
    )
    assert (c.price_per_1m_input_usd, c.price_per_1m_output_usd, c.max_share) == (0.15, 0.6, 0.2)
    # No threshold: no log-probability rule (judging tokens would only delay the answer).
    (r,) = plan_pool(pool(), [model(cloudFallback={"longPrompts": True})], nodes, 0).routes
    assert r.escalation_logprob_tokens == 0 and not r.cloud_fallback
