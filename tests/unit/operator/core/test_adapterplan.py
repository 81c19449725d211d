"""Adapter placement (adapterplan.py) on plain data: shares, copies, slot budgets, stickiness."""

from __future__ import annotations

from collections import Counter

from hatswarm_operator.core.adapterplan import (
    AdapterNode,
    copies_by_share,
    plan_adapters,
    request_shares,
)

ADAPTERS = [f"a{i}" for i in range(8)]
SKEWED = {"a0": 50, "a1": 20, "a2": 10, "a3": 5, "a4": 5, "a5": 5, "a6": 3, "a7": 2}


def nodes(*slots: int) -> list[AdapterNode]:
    return [AdapterNode(f"n{i}", s) for i, s in enumerate(slots)]


def copies_of(plan: dict[str, tuple[str, ...]]) -> Counter[str]:
    return Counter(a for carried in plan.values() for a in carried)


def test_every_node_carries_every_adapter_when_slots_allow() -> None:
    plan = plan_adapters(ADAPTERS[:3], nodes(4, 4, 4))
    assert plan == {f"n{i}": ("a0", "a1", "a2") for i in range(3)}


def test_shares_are_measured_or_uniform_before_any_request() -> None:
    assert request_shares(["a", "b"], {}) == {"a": 0.5, "b": 0.5}
    assert request_shares(["a", "b"], {"a": 3, "b": 1, "zzz": 100}) == {"a": 0.75, "b": 0.25}


def test_spread_fills_every_slot_and_keeps_each_node_within_its_budget() -> None:
    shares = request_shares(ADAPTERS, SKEWED)
    plan = plan_adapters(ADAPTERS, nodes(4, 4, 4), shares)
    assert all(len(carried) == 4 for carried in plan.values())
    copies = copies_of(plan)
    assert set(copies) == set(ADAPTERS)  # every adapter servable somewhere
    assert copies["a0"] == 3  # the hottest on every node
    assert copies["a0"] >= copies["a1"] >= copies["a3"] >= copies["a7"] == 1


def test_copies_follow_share_by_largest_remainder_capped_at_one_per_node() -> None:
    shares = request_shares(ADAPTERS, SKEWED)
    assert copies_by_share(ADAPTERS, shares, 12, 3) == {
        "a0": 3, "a1": 2, "a2": 2, "a3": 1, "a4": 1, "a5": 1, "a6": 1, "a7": 1,
    }  # fmt: skip
    uniform = copies_by_share(ADAPTERS, request_shares(ADAPTERS, {}), 12, 3)
    assert sum(uniform.values()) == 12 and max(uniform.values()) == 2


def test_fewer_slots_than_adapters_still_places_each_adapter_once() -> None:
    plan = plan_adapters(ADAPTERS, nodes(2, 2), request_shares(ADAPTERS, SKEWED))
    assert copies_of(plan) == dict.fromkeys(ADAPTERS, 1)


def test_a_node_keeps_the_adapters_it_carries_when_the_plan_allows() -> None:
    current = [
        AdapterNode("n0", 4, frozenset({"a4", "a5", "a6", "a7"})),
        AdapterNode("n1", 4, frozenset({"a0", "a1", "a2", "a3"})),
        AdapterNode("n2", 4),
    ]
    plan = plan_adapters(ADAPTERS, current, request_shares(ADAPTERS, {}))
    assert set(plan["n0"]) == {"a4", "a5", "a6", "a7"}
    assert set(plan["n1"]) == {"a0", "a1", "a2", "a3"}


def test_no_adapters_or_no_nodes() -> None:
    assert plan_adapters([], nodes(4)) == {"n0": ()}
    assert plan_adapters(ADAPTERS, []) == {}
