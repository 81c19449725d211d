"""The loop's parts that matter at fleet scale: bounded fan-out, planning on what the loop just
did, and status writes only for real changes (live measurements at most every 30 s)."""

from __future__ import annotations

import asyncio

from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus, PoolNode
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.runtime import COST_STATUS_SECONDS, PoolRuntime, fan_out
from hatswarm_operator.core.inventory import ModelObs, ModelState, NodeState


def test_fan_out_keeps_order_and_bounds_calls_in_flight() -> None:
    in_flight, peak = 0, 0

    async def call(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001 * (i % 3))
        in_flight -= 1
        return i * i

    assert asyncio.run(fan_out(list(range(50)), call, 7)) == [i * i for i in range(50)]
    assert peak == 7
    assert asyncio.run(fan_out([], call, 7)) == []


def runtime(now: list[float]) -> PoolRuntime:
    return PoolRuntime(AgentClient(), sink=None, clock=lambda: now[0])  # type: ignore[arg-type]


def test_planning_sees_what_the_loop_did_until_a_later_probe() -> None:
    now = [100.0]
    rt = runtime(now)
    seen = ModelObs("old", "1", ModelState.READY)
    rt.nodes = {"pi-1": NodeState("pi-1", "a:1", up=True, last_seen=99.0, models=(seen,))}
    rt._note("pi-1", "vision", "1", ModelState.LOADING)  # a load sent at 100
    rt._note("pi-1", "old", "1", None)  # an unload done at 100
    [view] = rt.planning_view()
    assert {(o.name, o.state) for o in view.models} == {("vision", ModelState.LOADING)}
    # A probe asked after both: the agent's answer is all there is.
    rt.nodes["pi-1"] = NodeState("pi-1", "a:1", up=True, last_seen=100.5, models=())
    [view] = rt.planning_view()
    assert view.models == ()
    assert rt._acted == {}


def test_live_measurements_alone_rewrite_status_at_most_every_30_s() -> None:
    now = [0.0]
    rt = runtime(now)

    def model(rate: float, phase: str = "Ready") -> EdgeModelStatus:
        return EdgeModelStatus(phase=phase, ready="2/2", request_rate=rate)

    assert rt._changed("em/m", model(1.0), {"request_rate": True})
    now[0] += 1
    assert not rt._changed("em/m", model(1.0), {"request_rate": True})  # unchanged
    assert not rt._changed("em/m", model(2.0), {"request_rate": True})  # a rate only: later
    assert rt._changed("em/m", model(2.0, "Degraded"), {"request_rate": True})  # now
    now[0] += COST_STATUS_SECONDS
    assert rt._changed("em/m", model(3.0, "Degraded"), {"request_rate": True})

    def pool(depth: int, ready: bool = True) -> InferencePoolStatus:
        return InferencePoolStatus(nodes=[PoolNode(name="pi-1", ready=ready, queue_depth=depth)])

    volatile = {"nodes": {"__all__": {"queue_depth"}}}
    assert rt._changed("pool", pool(0), volatile)
    assert not rt._changed("pool", pool(5), volatile)
    assert rt._changed("pool", pool(5, ready=False), volatile)
