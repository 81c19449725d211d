"""`hatswarm status`: ISO 8601 event times, and blanks (JSON: absent) for figures nothing
measured, never a made-up zero."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import yaml
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus, PoolCost, PoolNode
from hatswarm_operator.cli.main import main
from hatswarm_operator.core.plan import ResourceEvent
from hatswarm_operator.local.status import LocalSink, render

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def sink(tmp_path: Path) -> LocalSink:
    s = LocalSink(tmp_path / "status.json")
    asyncio.run(s.model_status("default", "idle", EdgeModelStatus(phase="Ready", ready="1/1")))
    asyncio.run(
        s.model_status(
            "default",
            "busy",
            EdgeModelStatus(phase="Ready", ready="1/1", request_rate=12.5, p99_latency_ms=8.25),
        )
    )
    asyncio.run(s.event("default", ResourceEvent("EdgeModel", "idle", "Normal", "Placed", "ok")))
    return s


def test_snapshot_times_are_iso_and_unmeasured_figures_absent(tmp_path: Path) -> None:
    sink(tmp_path)
    snap = json.loads((tmp_path / "status.json").read_text())
    assert ISO.match(snap["events"][0]["time"])
    assert "p99LatencyMs" not in snap["models"]["idle"]
    assert "requestRate" not in snap["models"]["idle"]
    assert snap["models"]["busy"]["p99LatencyMs"] == 8.25


def test_table_blanks_not_zeros(tmp_path: Path) -> None:
    table = render(sink(tmp_path).snapshot())
    idle = next(
        line for line in table.splitlines() if line.startswith("edgemodel.hatswarm.io/idle")
    )
    busy = next(
        line for line in table.splitlines() if line.startswith("edgemodel.hatswarm.io/busy")
    )
    assert idle.split() == ["edgemodel.hatswarm.io/idle", "1/1", "-", "Ready"]
    assert busy.split()[-2:] == ["12.5", "8.2"]
    event = table.splitlines()[-1].split()
    assert ISO.match(event[0]) and event[2] == "Placed"


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_status_output_formats(
    output: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink(tmp_path)
    assert main(["status", "--state-dir", str(tmp_path), "-o", output]) == 0
    text = capsys.readouterr().out
    snap = json.loads(text) if output == "json" else yaml.safe_load(text)
    assert ISO.match(snap["events"][0]["time"])
    assert "p99LatencyMs" not in snap["models"]["idle"]


def test_cloud_spend_and_per_node_cloud_answers_reach_status(tmp_path: Path) -> None:
    """The cloud counters NodeStatus carries are in the pool's status and its table (before,
    `hatswarm status` said 0 while the agents' /metrics counted the cloud's answers)."""
    s = LocalSink(tmp_path / "status.json")
    status = InferencePoolStatus(
        nodes=[PoolNode(name="pi-1", ready=True, cloud_requests=1250)],
        cost=PoolCost(cloud_per1k_usd=0.4, cloud_fallback_spend_usd=0.5),
    )
    asyncio.run(s.pool_status("default", "floor", status))
    snap = json.loads((tmp_path / "status.json").read_text())
    assert snap["pools"]["floor"]["nodes"][0]["cloudRequests"] == 1250
    pool_line = next(line for line in render(snap).splitlines() if line.startswith("inferencepool"))
    assert pool_line.split()[-2:] == ["0.4", "$0.5"]


def test_the_table_shows_each_nodes_memory_used_of_its_budget(tmp_path: Path) -> None:
    s = LocalSink(tmp_path / "status.json")
    status = InferencePoolStatus(
        nodes=[
            PoolNode(name="pi-1", ready=True, memory_mi_b=7204, memory_used_mi_b=1564),
            PoolNode(name="pi-2", ready=True, memory_mi_b=1401, memory_used_mi_b=0),
            PoolNode(name="pi-3", ready=True),
        ]
    )
    asyncio.run(s.pool_status("default", "floor", status))
    rows = {
        line.split()[0]: line.split()
        for line in render(s.snapshot()).splitlines()
        if line.startswith("  node/")
    }
    assert rows["node/pi-1"][-1] == "1564/7204Mi"
    assert rows["node/pi-2"][-1] == "0/1401Mi"
    assert "Mi" not in " ".join(rows["node/pi-3"])
