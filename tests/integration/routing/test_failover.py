"""Failover with nothing lost: steady tritonclient load through a gateway, one replica SIGKILLed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Agents

pytestmark = pytest.mark.integration

LOADGEN = Path(__file__).with_name("loadgen.py")


def test_sigkill_of_a_replica_mid_load_loses_no_request(
    agents: Agents, identity_model: Path
) -> None:
    b, c = agents.start_many(
        ["--model", f"ident={identity_model}", "--node-name", "b"],
        ["--model", f"ident={identity_model}", "--node-name", "c"],
    )
    a = agents.start(
        ["--gateway", "--node-name", "a", "--peer", f"ident={b.address}",
         "--peer", f"ident={c.address}"]
    )  # fmt: skip
    total = 1500
    load = subprocess.Popen(
        [sys.executable, str(LOADGEN), a.address, "ident", str(total), "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert load.stdout is not None
    try:
        killed = False
        summary: dict[str, object] = {}
        for line in load.stdout:  # bounded: the load generator sends `total` requests
            if line.startswith("progress ") and not killed and int(line.split()[1]) >= 400:
                c.kill()  # SIGKILL mid-load
                killed = True
            elif line.startswith("{"):
                summary = json.loads(line)
        load.wait(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
    assert killed
    assert summary["failed"] == 0, summary["errors"]
    assert summary["ok"] == total
    nodes = summary["nodes"]
    assert isinstance(nodes, dict)
    assert set(nodes) == {"b", "c"}  # both served before the kill
    assert nodes["b"] > nodes["c"]  # b carried everything after it
