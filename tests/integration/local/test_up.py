"""`hatswarm up` end to end: a subprocess pool, tritonclient load through one agent, a node
killed under load, nothing lost, the replica re-placed, and SIGINT leaves no process behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import tritonjobs
from tests.polling import poll
from tests.upproc import Up, alive

pytestmark = pytest.mark.integration


def _ready_nodes(up: Up) -> set[str]:
    m = up.model("shufflenet")
    return {p["node"] for p in m.get("placements", []) if p.get("state") == "Ready"}


def test_up_survives_a_node_kill_and_stops_cleanly(tmp_path: Path) -> None:
    with Up(tmp_path / "state", "--nodes", "3") as up:
        assert poll(lambda: len(_ready_nodes(up)) == 2), up.output
        pids: dict[str, int] = up.status()["pids"]
        addresses = up.line("entry points").split(": ", 1)[1].strip().split(", ")
        holders = _ready_nodes(up)
        token = up.token()  # secure by default: `up` generated the clients' token
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
        assert poll(lambda: len(_ready_nodes(up)) == 2 and victim not in _ready_nodes(up))
        events = [e["reason"] for e in up.status()["events"]]
        assert "NodeLost" in events
        children = up.children()
    assert poll(lambda: not alive(children), within=20), alive(children)
    assert any("stopped every agent" in x for x in up.lines)
