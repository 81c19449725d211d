"""Adapter-affinity routing (router.py) on plain data: scores, best-score-then-load, learning."""

from __future__ import annotations

import random

from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.policy import (
    ADAPTER_CANNOT,
    ADAPTER_EVICT,
    ADAPTER_FREE_SLOT,
    ADAPTER_LOADED,
    AdapterResidency,
    Balancer,
    Escalation,
    PeerState,
    Replica,
    compile_table,
)


def replica(i: int, resident: list[str], known: set[str] | None, slots: int) -> Replica:
    known_set = frozenset(known) if known is not None else None
    return Replica(PeerState(f"10.0.0.{i}:8001", node=f"n{i}"), 1.0,
                   AdapterResidency(list(resident), known_set, slots))  # fmt: skip


def test_scores_loaded_over_free_slot_over_evict_over_cannot() -> None:
    full = AdapterResidency(["a", "b"], frozenset("abcd"), 2)
    roomy = AdapterResidency(["a"], frozenset("abcd"), 2)
    assert full.score("a") == ADAPTER_LOADED
    assert roomy.score("c") == ADAPTER_FREE_SLOT
    assert full.score("c") == ADAPTER_EVICT
    assert full.score("z") == ADAPTER_CANNOT
    assert AdapterResidency().score("z") == ADAPTER_EVICT  # not reported: it may have it


def test_best_score_wins_over_load_then_least_loaded_among_the_best() -> None:
    reps = [
        replica(0, ["x"], set("xyz"), 2),
        replica(1, ["y", "x"], set("xyz"), 2),
        replica(2, ["y"], set("xyz"), 2),
    ]
    reps[1].peer.outstanding = 5  # busy, but the only one with x besides n0
    reps[0].peer.outstanding = 9
    b = Balancer(random.Random(0))
    for policy in ("PowerOfTwoChoices", "LeastLoaded"):
        picks = {b.choose(reps, 0.0, 64, policy, adapter="x")[0].node for _ in range(50)}  # type: ignore[union-attr]
        assert picks == {"n1"}
    # Without an adapter (or adapter routing off) load alone decides.
    assert b.choose(reps, 0.0, 64, "LeastLoaded")[0].node == "n2"  # type: ignore[union-attr]


def test_replicas_that_cannot_serve_the_adapter_are_never_chosen() -> None:
    reps = [replica(0, [], {"a"}, 2), replica(1, [], {"b"}, 2)]
    b = Balancer(random.Random(1))
    assert {b.choose(reps, 0.0, 64, adapter="b")[0].node for _ in range(20)} == {"n1"}  # type: ignore[union-attr]
    assert b.choose(reps, 0.0, 64, adapter="c") == (None, False)


def test_a_full_best_replica_yields_to_the_next_score() -> None:
    reps = [replica(0, ["a"], set("ab"), 2), replica(1, [], set("ab"), 2)]
    reps[0].peer.outstanding = 4
    peer, saturated = Balancer().choose(reps, 0.0, 4, adapter="a")
    assert peer is not None and peer.node == "n1" and not saturated
    assert Balancer.best_adapter_score(reps, 0.0, 4, "a") == ADAPTER_FREE_SLOT


def test_residency_is_learned_from_answers_in_lru_order() -> None:
    r = AdapterResidency(["a", "b"], frozenset("abcd"), 2)
    r.used("c")
    assert r.resident == ["b", "c"]
    r.used("b")
    assert r.resident == ["c", "b"]
    r.used("z")  # not known there: a table or retry will say more
    assert r.resident == ["c", "b"]
    unknown = AdapterResidency()
    unknown.used("a")
    assert unknown.resident == []  # slot count unknown: nothing is assumed


def test_compiled_table_carries_endpoint_adapters_and_the_escalation_rule() -> None:
    table = control_pb2.RoutingTable(
        generation=1,
        routes=[
            control_pb2.Route(
                model="m",
                endpoints=[
                    control_pb2.Endpoint(
                        node="n1",
                        address="h1:1",
                        adapters=["a"],
                        adapter_slots_free=1,
                        adapters_known=["a", "b"],
                    ),
                    control_pb2.Endpoint(node="n2", address="h2:1"),
                ],
                escalation_output="probs",
                escalation_threshold=0.7,
                escalation_model="big",
            ),
            control_pb2.Route(model="big", escalation_output="y"),  # no target: no rule
        ],
    )
    compiled = compile_table(table, "self", [])
    route = compiled.routes("m")[""]
    one, two = route.replicas
    assert one.adapters == AdapterResidency(["a"], frozenset({"a", "b"}), 2)
    assert two.adapters == AdapterResidency()
    assert route.escalation == Escalation("probs", 0.7, "big", False)
    assert route.escalation.target == "model:big"
    assert compiled.routes("big")[""].escalation is None
    assert compiled.adapter_policy == "Affinity"
