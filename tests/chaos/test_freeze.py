"""A frozen peer (SIGSTOP: the process is there, its socket accepts, nothing answers) under
closed-loop load costs each request at most one attempt timeout before another replica is
asked; nothing fails; after SIGCONT the peer serves again without any new table.

Timings are the chaos bench's (bench/chaos_bench.py); here only loss and a generous bound:
before per-attempt timeouts a request sent to the frozen peer waited out the whole 5 s budget
and failed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.scenarios import frozen_peer
from tests.onnxmodels import build_identity

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_a_frozen_peer_costs_one_attempt_timeout_and_rejoins(tmp_path: Path) -> None:
    result = frozen_peer(build_identity(tmp_path / "ident.onnx"))
    assert not result.summary.failed, result.summary.errors()
    # the attempt timeout's floor is 0.25 s; the budget is 5 s: far under it, on a busy box
    assert result.worst_during_freeze_s() < 2.5
    assert result.rejoined_s is not None, "b never answered again after SIGCONT"
    assert result.summary.nodes["c"] > 0
