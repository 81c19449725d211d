"""Attempts that outlive their timeout count toward a peer's ejection as errors do."""

from __future__ import annotations

from hatswarm_agent.routing.cloud import CloudTarget
from hatswarm_agent.routing.forwarding import Forwarder
from hatswarm_agent.routing.peers import Peers
from hatswarm_agent.routing.policy import EJECT_AFTER_FAILURES, Balancer, PeerState
from hatswarm_agent.serving.metrics import AgentMetrics, RouteMetrics


def test_consecutive_attempt_timeouts_eject_the_peer_and_are_counted() -> None:
    metrics = AgentMetrics()
    forwarder = Forwarder(
        Peers(None, 0.2), CloudTarget(), Balancer(), RouteMetrics(metrics.registry), lambda: None
    )
    peer = PeerState("10.0.0.2:8001", "b")
    for _ in range(EJECT_AFTER_FAILURES - 1):
        forwarder.timed_out(peer, 0.25)
    assert not peer.ejected
    forwarder.timed_out(peer, 0.25)
    assert peer.ejected

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"peer": "b"})

    assert sample("hatswarm_peer_attempt_timeouts_total") == EJECT_AFTER_FAILURES
    assert sample("hatswarm_peer_ejections_total") == 1
