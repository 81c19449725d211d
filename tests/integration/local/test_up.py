"""`hatswarm up` end to end: a subprocess pool, tritonclient load through one agent, a node
killed under load, nothing lost, the replica re-placed, and SIGINT leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from tests import tritonjobs
from tests.polling import poll

pytestmark = pytest.mark.integration

HATSWARM = Path(sys.executable).parent / "hatswarm"


def _status(state: Path) -> dict:  # type: ignore[type-arg]
    try:
        return json.loads((state / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _ready_nodes(state: Path) -> set[str]:
    m = _status(state).get("models", {}).get("shufflenet", {})
    return {p["node"] for p in m.get("placements", []) if p.get("state") == "Ready"}


def test_up_survives_a_node_kill_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [str(HATSWARM), "up", "--nodes", "3", "--quiet", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    ).start()  # type: ignore[union-attr]
    try:
        assert poll(lambda: len(_ready_nodes(state)) == 2), "".join(lines)
        pids: dict[str, int] = _status(state)["pids"]
        addresses = (
            next(x for x in lines if "entry points" in x).split(": ", 1)[1].strip().split(", ")
        )
        holders = _ready_nodes(state)
        # Secure by default: `hatswarm up` generated the clients' token (and said where).
        token_file = Path(next(x for x in lines if "token in" in x).rsplit(" ", 1)[1].strip())
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        # The entry agent does not hold the model: every request is routed to a peer.
        names = sorted(pids)
        entry = addresses[names.index(next(n for n in names if n not in holders))]
        victim = sorted(holders)[0]

        res = tritonjobs.run(
            tritonjobs.infer_many,
            entry,
            "shufflenet",
            "gpu_0/data_0",
            [1, 3, 224, 224],
            120,
            "gpu_0/softmax_1",
            pids[victim],
            30,
            15.0,
            token,
        )
        assert res["errors"] == []
        assert res["ok"] == 120
        assert res["shapes"] == {(1, 1000)}
        assert res["nodes"][victim] > 0  # it served before it died
        # the lost replica is re-placed on the node that had none
        assert poll(lambda: len(_ready_nodes(state)) == 2 and victim not in _ready_nodes(state))
        events = [e["reason"] for e in _status(state)["events"]]
        assert "NodeLost" in events
    finally:
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(lines)
    assert poll(
        lambda: (
            not [
                p
                for p in children
                if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            ]
        ),
        within=20,
    )
    assert any("stopped every agent" in x for x in lines)
