"""Generation routing decisions (pure): affinity keys, rendezvous hashing, token-load scores."""

from __future__ import annotations

import random
from collections import Counter

from hatswarm_agent.routing.policy import (
    PREFIX_AFFINITY_CHARS,
    Balancer,
    PeerState,
    Replica,
    affinity_key,
    generation_score,
    rendezvous,
)

NOW = 100.0


def test_affinity_key_session_first_then_the_conversation_head() -> None:
    turn1 = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    turn2 = [*turn1, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "?"}]
    assert affinity_key(turn1) == affinity_key(turn2) != ""
    assert affinity_key(turn1) != affinity_key([{"role": "user", "content": "hi"}])
    assert affinity_key(turn1, session="alice") == "session:alice"
    assert affinity_key([{"role": "system", "content": "only a system prompt"}]) == ""


def test_affinity_key_of_completion_prompts_is_their_head_when_long_enough() -> None:
    assert affinity_key("short prompt") == ""
    long = "x" * PREFIX_AFFINITY_CHARS
    assert affinity_key(long) == affinity_key(long + " and a follow-up") != ""
    assert affinity_key("y" + long) != affinity_key(long)


def test_rendezvous_is_stable_spread_and_moves_only_the_lost_nodes_keys() -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    keys = [f"session:{i}" for i in range(2000)]
    owners = {k: rendezvous(k, nodes) for k in keys}
    assert owners == {k: rendezvous(k, list(reversed(nodes))) for k in keys}  # order-free
    shares = Counter(owners.values())
    assert all(400 < shares[n] < 600 for n in nodes), shares
    after = {k: rendezvous(k, ["n1", "n2", "n4"]) for k in keys}
    moved = [k for k in keys if after[k] != owners[k]]
    assert moved and all(owners[k] == "n3" for k in moved)
    assert rendezvous("k", []) == ""


def test_score_prefers_affinity_then_free_slots_then_free_kv_cache() -> None:
    idle, busy = PeerState("a:1", "a"), PeerState("b:1", "b")
    busy.on_generation_load(depth=1, slots=2, kv_use=0.5, now=NOW)
    idle.on_generation_load(depth=0, slots=2, kv_use=0.0, now=NOW)
    assert generation_score(idle, NOW, False) == 2.0
    assert generation_score(busy, NOW, False) == 1.0
    assert generation_score(busy, NOW, True) > generation_score(idle, NOW, False)
    kv_heavy = PeerState("c:1", "c")
    kv_heavy.on_generation_load(depth=1, slots=2, kv_use=0.9, now=NOW)
    assert generation_score(busy, NOW, False) > generation_score(kv_heavy, NOW, False)
    # A stale report falls back to the sequences this agent runs there.
    assert generation_score(busy, NOW + 10, False) == 2.0
    busy.outstanding = 1
    assert generation_score(busy, NOW + 10, False) == 1.0


def test_choose_generation_takes_the_affine_peer_unless_it_is_full() -> None:
    a, b = PeerState("a:1", "a"), PeerState("b:1", "b")
    replicas = [Replica(a, 1.0), Replica(b, 1.0)]
    balancer = Balancer(random.Random(1))
    a.on_generation_load(depth=1, slots=2, kv_use=0.4, now=NOW)
    assert balancer.choose_generation(replicas, NOW, 0, affine="a") == (a, False)
    assert balancer.choose_generation(replicas, NOW, 0) == (b, False)  # no affinity: less load
    a.exhausted_until = NOW + 1  # it answered RESOURCE_EXHAUSTED: full
    assert balancer.choose_generation(replicas, NOW, 0, affine="a") == (b, False)
    assert balancer.choose_generation(replicas, NOW, 0, exclude={"b:1"}, affine="a") == (
        None,
        True,
    )
