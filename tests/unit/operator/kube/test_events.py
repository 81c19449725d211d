"""The Event recorder correlates like client-go's: counts, aggregates, rate-limits, batches;
and the sink skips a status patch that would change nothing but timestamps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hatswarm_operator.kube.events import COMBINED, EventRecorder
from hatswarm_operator.kube.session import ApiStatusError
from hatswarm_operator.kube.sink import changes_anything, object_ref


class FakeSession:
    """Records POSTs and PATCHes; Events get generated names; a name can be made to expire."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []
        self.expired: set[str] = set()

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return {"metadata": {"name": f"{body['metadata']['generateName']}{len(self.created)}"}}

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if name in self.expired:
            raise ApiStatusError(404, "NotFound", f'events "{name}" not found')
        self.patched.append((name, body))
        return {}


def recorder(now: list[float], **kw: Any) -> tuple[EventRecorder, FakeSession]:
    session = FakeSession()
    rec = EventRecorder(session, instance="test", clock=lambda: now[0], **kw)  # type: ignore[arg-type]
    return rec, session


POOL = object_ref("InferencePool", "default", "floor", "uid-1")


def test_the_same_event_counts_up_on_one_object_in_one_patch_per_flush() -> None:
    now = [1000.0]
    rec, api = recorder(now)
    rec.record(POOL, "Warning", "NodeLost", "node pi-1 left")
    asyncio.run(rec.flush())
    assert len(api.created) == 1 and api.created[0]["count"] == 1
    assert api.created[0]["involvedObject"] == {
        "apiVersion": "hatswarm.io/v1alpha1", "kind": "InferencePool", "name": "floor",
        "namespace": "default", "uid": "uid-1",
    }  # fmt: skip
    for _ in range(3):
        now[0] += 1
        rec.record(POOL, "Warning", "NodeLost", "node pi-1 left")
    asyncio.run(rec.flush())
    assert len(api.created) == 1
    assert api.patched == [("floor.1", {"count": 4, "lastTimestamp": "1970-01-01T00:16:43Z"})]
    asyncio.run(rec.flush())
    assert len(api.patched) == 1  # nothing new: nothing sent


def test_similar_events_combine_after_ten_messages() -> None:
    now = [1000.0]
    rec, api = recorder(now)
    for i in range(14):
        rec.record(POOL, "Normal", "NodeJoined", f"node pi-{i} joined the pool")
    asyncio.run(rec.flush())
    messages = [e["message"] for e in api.created]
    assert len(messages) == 10
    assert messages[-1] == COMBINED + "node pi-13 joined the pool"  # the latest, when sent
    combined = api.created[-1]
    assert combined["count"] == 5  # the tenth to the fourteenth
    rec.record(POOL, "Normal", "NodeJoined", "node pi-99 joined the pool")
    asyncio.run(rec.flush())
    assert api.patched[-1][1]["message"] == COMBINED + "node pi-99 joined the pool"
    # Ten minutes later the window starts again: messages stand alone.
    now[0] += 601
    rec.record(POOL, "Normal", "NodeJoined", "node pi-100 joined the pool")
    asyncio.run(rec.flush())
    assert api.created[-1]["message"] == "node pi-100 joined the pool"


def test_the_spam_filter_drops_past_the_burst_per_reason_and_refills() -> None:
    now = [1000.0]
    rec, api = recorder(now, burst=3, refill_s=300.0)
    for i in range(5):
        rec.record(POOL, "Normal", "Loading", f"loading m@{i}")
    rec.record(POOL, "Warning", "NodeLost", "node pi-1 left")  # its own bucket
    asyncio.run(rec.flush())
    assert [e["reason"] for e in api.created] == ["Loading"] * 3 + ["NodeLost"]
    assert rec.stats.dropped == 2
    now[0] += 300
    rec.record(POOL, "Normal", "Loading", "loading m@9")
    asyncio.run(rec.flush())
    assert api.created[-1]["message"] == "loading m@9"


def test_an_expired_event_is_posted_anew() -> None:
    now = [1000.0]
    rec, api = recorder(now)
    rec.record(POOL, "Warning", "NodeLost", "node pi-1 left")
    asyncio.run(rec.flush())
    api.expired.add("floor.1")
    rec.record(POOL, "Warning", "NodeLost", "node pi-1 left")
    asyncio.run(rec.flush())
    assert len(api.created) == 2 and api.created[1]["count"] == 2


@pytest.mark.parametrize(
    ("stored", "patch", "changes"),
    [
        ({"phase": "Ready"}, {"phase": "Ready", "p99LatencyMs": None}, False),
        ({"phase": "Ready"}, {"phase": "Degraded"}, True),
        ({"phase": "Ready", "old": 1}, {"phase": "Ready", "old": None}, True),
        (
            {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t1"}]},
            {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t2"}]},
            False,
        ),
        (
            {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t1"}]},
            {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "t2"}]},
            True,
        ),
        (
            {"nodes": [{"name": "pi-1", "lastSeen": "t1"}]},
            {"nodes": [{"name": "pi-1", "lastSeen": "t2"}]},
            False,
        ),
    ],
)
def test_a_status_patch_is_needed_only_for_more_than_timestamps(
    stored: dict[str, Any], patch: dict[str, Any], changes: bool
) -> None:
    assert changes_anything(stored, patch) is changes
