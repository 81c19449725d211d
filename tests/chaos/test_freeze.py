"""A frozen peer (SIGSTOP: the process is there, its socket accepts, nothing answers) under
closed-loop load costs each request at most one attempt timeout before another replica is
asked; nothing fails; after SIGCONT the peer serves again without any new table.

Timings are the chaos bench's (bench/chaos_bench.py); here only loss and a generous bound:
before per-attempt timeouts a request sent to the frozen peer waited out the whole 5 s budget
and failed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_agent.protocol.wire import NODE_PARAM

from tests.chaos.inputs import ident_request
from tests.chaos.scenarios import Agents, frozen_peer, push_table, route
from tests.onnxmodels import build_identity

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SLACK_S = 2.0  # scheduling on a busy 2-core box


def test_a_frozen_peer_costs_one_attempt_timeout_and_rejoins(tmp_path: Path) -> None:
    result = frozen_peer(build_identity(tmp_path / "ident.onnx"))
    assert not result.summary.failed, result.summary.errors()
    # the attempt timeout's floor is 0.25 s; the budget is 5 s: far under it, on a busy box
    assert result.worst_during_freeze_s() < 2.5
    assert result.rejoined_s is not None, "b never answered again after SIGCONT"
    assert result.summary.nodes["c"] > 0


def test_an_entry_whose_only_peer_froze_serves_again_after_sigcont(tmp_path: Path) -> None:
    """While its only peer is frozen the entry answers each request with a status within the
    budget (the timeouts eject the peer); after SIGCONT it serves again, with no new table.

    Before, the ejected peer was never asked again: every later request got "no replica ...
    (tried: none); last error: unknown model", even after SIGCONT.
    """
    model = build_identity(tmp_path / "ident.onnx")
    budget_s = 2.0
    with Agents() as agents:
        b = agents.start(["--model", f"ident={model}", "--node-name", "b"])
        a = agents.start(["--node-name", "a"])
        push_table(a.address, [route("ident", b, names=["b"])], 1, timeout_ms=int(budget_s * 1000))
        with grpc.insecure_channel(a.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for i in range(5):
                stub.ModelInfer(ident_request(i), timeout=10)
            os.kill(b.proc.pid, signal.SIGSTOP)
            for i in range(4):  # more than the failures that eject a peer
                start = time.monotonic()
                with pytest.raises(grpc.RpcError) as err:
                    stub.ModelInfer(ident_request(i), timeout=30)
                assert err.value.code() in (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.UNAVAILABLE,
                ), err.value.details()
                assert time.monotonic() - start < budget_s + SLACK_S
            os.kill(b.proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + 10
            served, last = "", ""
            while not served and time.monotonic() < deadline:
                try:
                    response = stub.ModelInfer(ident_request(), timeout=10)
                    served = response.parameters[NODE_PARAM].string_param
                except grpc.RpcError as exc:
                    last = exc.details() or ""
                    time.sleep(0.1)
            assert served == "b", f"never served again: {last}"
