"""Which of a model's LoRA adapters each node carries. Pure: plain data in, a plan out.

A node serving a base model version holds at most `slots` adapters loaded at once (the agent's
`adapter_slots`, LRU beyond that). The simple case is the common one: when every node has a
slot for every adapter, every node carries every adapter. Otherwise the adapters are spread
over the nodes by their measured request share so that no node carries more than its slots
(nothing is ever evicted, every request finds its adapter loaded somewhere): each adapter gets
one node, the slots left over go to the hot adapters in proportion to their share (at most one
copy per node), and each copy goes to the node with the least share so far, preferring a node
that already carries the adapter (no reload, no churn). When the pool has fewer slots than
adapters, each adapter still gets one node and some nodes carry more than their slots (they
swap adapters under LRU: slower, never unservable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_SLOTS = 4
"""The agent's default `adapter_slots` (hatswarm_agent.serving.adapters.DEFAULT_SLOTS)."""


@dataclass(frozen=True)
class AdapterNode:
    """One node serving the base model version."""

    name: str
    slots: int = DEFAULT_SLOTS
    carries: frozenset[str] = field(default_factory=frozenset)
    """Adapters it has now: kept where the plan allows (no reload)."""


def request_shares(adapters: Sequence[str], requests: Mapping[str, int]) -> dict[str, float]:
    """Each adapter's share of the measured requests; uniform before any were measured."""
    counts = {a: max(0, requests.get(a, 0)) for a in adapters}
    total = sum(counts.values())
    if total == 0:
        return {a: 1.0 / len(adapters) for a in adapters} if adapters else {}
    return {a: c / total for a, c in counts.items()}


def copies_by_share(
    adapters: Sequence[str], shares: Mapping[str, float], slots: int, max_copies: int
) -> dict[str, int]:
    """How many nodes carry each adapter: one each, the rest of `slots` by share.

    Largest-remainder apportionment of the spare slots, at most `max_copies` per adapter;
    ties go to the earlier adapter in `adapters`.
    """
    copies = dict.fromkeys(adapters, 1)
    spare = slots - len(adapters)
    while spare > 0:
        open_ = [a for a in adapters if copies[a] < max_copies]
        if not open_:
            break
        weight = {a: max(shares.get(a, 0.0), 0.0) for a in open_}
        total = sum(weight.values())
        if total <= 0:
            weight = dict.fromkeys(open_, 1.0)
            total = float(len(open_))
        quota = {a: spare * weight[a] / total for a in open_}
        given = 0
        for a in open_:
            add = min(int(quota[a]), max_copies - copies[a])
            copies[a] += add
            given += add
        spare -= given
        if spare <= 0:
            break
        order = sorted(
            (a for a in open_ if copies[a] < max_copies),
            key=lambda a: (-(quota[a] - int(quota[a])), adapters.index(a)),
        )
        for a in order[:spare]:
            copies[a] += 1
            spare -= 1
        if not order:
            break
    return copies


def plan_adapters(
    adapters: Sequence[str],
    nodes: Sequence[AdapterNode],
    shares: Mapping[str, float] | None = None,
) -> dict[str, tuple[str, ...]]:
    """node name -> the adapters it should carry (in `adapters` order)."""
    if not nodes:
        return {}
    if not adapters:
        return {n.name: () for n in nodes}
    if all(n.slots >= len(adapters) for n in nodes):
        return {n.name: tuple(adapters) for n in nodes}
    shares = shares if shares is not None else request_shares(adapters, {})
    budget = {n.name: max(n.slots, 0) for n in nodes}
    copies = copies_by_share(adapters, shares, sum(budget.values()), len(nodes))
    carried: dict[str, set[str]] = {n.name: set() for n in nodes}
    load = dict.fromkeys(budget, 0.0)  # share each node is expected to serve
    order = sorted(adapters, key=lambda a: (-shares.get(a, 0.0), -copies[a], adapters.index(a)))
    left = dict(copies)

    def give(node: str, adapter: str) -> None:
        carried[node].add(adapter)
        load[node] += shares.get(adapter, 0.0) / copies[adapter]
        left[adapter] -= 1

    # First keep what nodes carry (no reload), then place the remaining copies.
    for a in order:
        for n in sorted(nodes, key=lambda n: (load[n.name], n.name)):
            if left[a] and a in n.carries and len(carried[n.name]) < budget[n.name]:
                give(n.name, a)
    for a in order:
        while left[a] > 0:
            candidates = [n for n in nodes if a not in carried[n.name]]
            if not candidates:
                break
            room = [n for n in candidates if len(carried[n.name]) < budget[n.name]]
            pool = room or candidates  # overcommitted: fewer slots than adapters
            best = min(
                pool,
                key=lambda n: (load[n.name], len(carried[n.name]) - budget[n.name], n.name),
            )
            give(best.name, a)
    return {n.name: tuple(a for a in adapters if a in carried[n.name]) for n in nodes}
