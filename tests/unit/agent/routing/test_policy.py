"""Routing policy (router.py): P2C, weights, saturation, ejection, canary split, waiting line."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.policy import (
    EJECT_AFTER_FAILURES,
    Balancer,
    LatencyWindow,
    PeerState,
    Replica,
    WaitingLine,
    attempt_timeout,
    compile_table,
    pick_version,
    should_shed,
)


def _replicas(*weights: float) -> list[Replica]:
    return [Replica(PeerState(f"10.0.0.{i}:8001"), w) for i, w in enumerate(weights)]


def test_p2c_prefers_the_less_loaded_peer() -> None:
    reps = _replicas(1, 1)
    reps[0].peer.outstanding = 10
    balancer = Balancer(random.Random(1))
    picks = Counter(balancer.choose(reps, 0.0, 64)[0].address for _ in range(200))  # type: ignore[union-attr]
    assert picks == {reps[1].peer.address: 200}


def test_p2c_prefers_the_faster_peer_by_ewma() -> None:
    reps = _replicas(1, 1, 1)
    for r, seconds in zip(reps, (0.003, 0.001, 0.001), strict=True):
        r.peer.on_success(seconds, -1, 0.0)
    balancer = Balancer(random.Random(2))
    picks = Counter(balancer.choose(reps, 0.0, 64)[0].address for _ in range(300))  # type: ignore[union-attr]
    assert picks[reps[0].peer.address] < 30  # only when both draws fall on it... never
    assert picks[reps[1].peer.address] > 100 and picks[reps[2].peer.address] > 100


def test_weights_set_the_shares_when_peers_are_equal() -> None:
    reps = _replicas(3, 1)
    balancer = Balancer(random.Random(3))
    picks = Counter(
        balancer.choose(reps, 0.0, 64, "RoundRobin")[0].address  # type: ignore[union-attr]
        for _ in range(400)
    )
    assert picks[reps[0].peer.address] == 300


def test_full_and_ejected_peers_are_skipped_and_full_means_saturated() -> None:
    reps = _replicas(1, 1)
    reps[0].peer.outstanding = 4
    peer, saturated = Balancer().choose(reps, 0.0, 4)
    assert peer is reps[1].peer and not saturated
    reps[1].peer.reported_depth, reps[1].peer.reported_at = 4, 0.0
    assert Balancer().choose(reps, 0.1, 4) == (None, True)
    assert Balancer().choose(reps, 5.0, 4)[0] is reps[1].peer  # the report went stale
    reps[1].peer.ejected = True
    assert Balancer().choose(reps, 5.0, 4) == (None, True)
    reps[0].peer.outstanding = 0
    assert Balancer().choose(reps, 5.0, 4)[0] is reps[0].peer  # never the ejected one...
    # ...unless every replica left is ejected (panic): trying it beats failing the request.
    assert Balancer().choose(reps, 5.0, 4, exclude={reps[0].peer.address})[0] is reps[1].peer
    assert Balancer().choose(reps, 5.0, 4, exclude={r.peer.address for r in reps}) == (
        None,
        False,
    )


def test_an_answer_readmits_an_ejected_peer_tried_in_panic() -> None:
    peer = PeerState("p:1")
    for _ in range(EJECT_AFTER_FAILURES):
        peer.on_failure(0.0)
    assert peer.ejected
    peer.on_success(0.01, -1, 1.0)
    assert not peer.ejected and peer.consecutive_failures == 0


def test_attempt_timeout_scales_with_observed_latency_within_floor() -> None:
    peer = PeerState("p:1")
    assert attempt_timeout(peer, None, 4.0, 0.25, cold_s=1.0) == 1.0  # nothing known yet
    assert attempt_timeout(peer, 0.01, 4.0, 0.25) == 0.25  # the pool's tail, under the floor
    peer.on_success(0.2, -1, 0.0)
    assert attempt_timeout(peer, 0.01, 4.0, 0.25) == pytest.approx(0.8)  # 4 x its latency
    assert attempt_timeout(peer, 0.5, 4.0, 0.25) == pytest.approx(2.0)  # 4 x the pool's tail


def test_ejection_after_consecutive_failures_and_readmission_by_probe() -> None:
    peer = PeerState("p:1")
    for _ in range(EJECT_AFTER_FAILURES - 1):
        assert not peer.on_failure(0.0)
    assert peer.on_failure(0.0) and peer.ejected
    first_until = peer.ejected_until
    peer.on_probe(False, first_until)
    assert peer.ejected and peer.ejected_until - first_until > first_until  # back-off grows
    peer.on_probe(True, peer.ejected_until)
    assert not peer.ejected and peer.consecutive_failures == 0
    peer.on_exhausted(1.0)
    assert peer.full(0, 1.0) and not peer.full(0, 2.0)


def test_compile_marks_our_own_endpoint_local_and_keeps_peer_state() -> None:
    t = control_pb2.RoutingTable(
        routes=[
            control_pb2.Route(
                model="m",
                version="1",
                endpoints=[
                    control_pb2.Endpoint(node="me", address="10.0.0.1:8001", weight=2),
                    control_pb2.Endpoint(node="b", address="10.0.0.2:8001", weight=2),
                ],
            )
        ]
    )
    known = {"10.0.0.2:8001": PeerState("10.0.0.2:8001", outstanding=3)}
    compiled = compile_table(t, "me", {"127.0.0.1:8001"}, known)
    r = compiled.routes("m")["1"]
    assert r.local
    assert [x.peer.address for x in r.replicas] == ["10.0.0.2:8001"]
    assert r.replicas[0].peer.outstanding == 3
    assert r.weight == 2


def test_canary_split_by_route_weight() -> None:
    t = control_pb2.RoutingTable(
        routes=[
            control_pb2.Route(model="m", version="1", weight=90),
            control_pb2.Route(model="m", version="2", weight=10),
        ]
    )
    routes = compile_table(t, "x", set()).routes("m")
    rng = random.Random(4)
    counts = Counter(pick_version(routes, rng).version for _ in range(2000))  # type: ignore[union-attr]
    assert 0.86 < counts["1"] / 2000 < 0.94
    assert pick_version(routes, rng, "2").version == "2"  # type: ignore[union-attr]
    assert pick_version(routes, rng, "3") is None


def test_waiting_line_wakes_the_most_important_then_oldest() -> None:
    line = WaitingLine()
    line.join(1, "a")
    line.join(5, "b")
    line.join(5, "c")
    line.remove("c")
    line.join(5, "d")
    assert [line.next(), line.next(), line.next(), line.next()] == ["b", "d", "a", None]
    assert should_shed(0) and not should_shed(1)


def test_latency_window_percentile_needs_samples() -> None:
    w = LatencyWindow(min_samples=10)
    assert w.percentile(95) is None
    for i in range(100):
        w.add(i / 1000)
    assert w.percentile(95) == 0.094
