"""A routing table that removes a peer with requests in flight on it: every request completes,
or fails with a status, within the pool's budget.

Before, the removed peer's channel was closed with a one-second grace; the calls it cut raised
asyncio.CancelledError in the handler, which then sent no status at all: clients hung until
their own deadline (forever without one).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import pytest
from hatswarm_agent.routing.cloud import CloudTarget
from hatswarm_agent.routing.forwarding import AttemptFailedError, Forwarder
from hatswarm_agent.routing.peers import Peers
from hatswarm_agent.routing.policy import Balancer, PeerState
from hatswarm_agent.serving.metrics import AgentMetrics, RouteMetrics

from tests.chaos.inputs import ident_request
from tests.chaos.scenarios import Agents, table_swap
from tests.onnxmodels import build_identity

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SLACK_S = 2.0  # scheduling on a busy 2-core box; a hang would be the client's 30 s deadline


@pytest.mark.parametrize("frozen", [False, True], ids=["alive", "frozen"])
def test_a_swap_removing_a_peer_mid_flight_ends_every_request_within_the_budget(
    tmp_path: Path, frozen: bool
) -> None:
    result = table_swap(build_identity(tmp_path / "ident.onnx"), frozen=frozen)
    around = [o for o in result.summary.outcomes if o.started < result.swapped_at + 1]
    assert around and result.summary.nodes["b"] > 0  # b did carry requests before the swap
    worst = max(o.seconds for o in around)
    assert worst < result.budget_s + SLACK_S, [o for o in around if o.seconds == worst]
    # b's 2.5 s batches make some of its requests outlive the budget: they end with a status
    assert {o.code for o in result.summary.failed} <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}


async def test_a_call_cut_by_its_channel_closing_is_a_retryable_status(tmp_path: Path) -> None:
    """The mechanism: a forward on a channel closed under it raises UNAVAILABLE (another
    replica may answer), not CancelledError."""
    model = build_identity(tmp_path / "ident.onnx")
    with Agents() as agents:
        b = agents.start(["--model", f"ident={model}", "--node-name", "b"])
        os.kill(b.proc.pid, signal.SIGSTOP)  # the call stays in flight
        peers = Peers(None, 0.2)
        peer = PeerState(b.address, "b")
        peers.adopt({b.address: peer})
        forwarder = Forwarder(
            peers, CloudTarget(), Balancer(), RouteMetrics(AgentMetrics().registry), lambda: None
        )
        loop = asyncio.get_running_loop()
        call = asyncio.ensure_future(forwarder.forward(peer, ident_request(), loop.time() + 30))
        await asyncio.sleep(0.3)
        peers.adopt({}, grace_s=0.2)  # the new table dropped b
        with pytest.raises(AttemptFailedError) as err:
            await asyncio.wait_for(call, 10)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE and err.value.retryable
        await peers.stop()
