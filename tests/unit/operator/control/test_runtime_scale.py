"""The loop's parts that matter at fleet scale: bounded fan-out, planning on what the loop just
did, and status writes only for real changes (live measurements at most every 30 s)."""

from __future__ import annotations

import asyncio

from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus, PoolNode
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.runtime import (
    COST_STATUS_SECONDS,
    POOL_METRICS,
    PoolRuntime,
    fan_out,
)
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


def test_an_slo_message_is_a_live_measurement_but_its_verdict_is_a_change() -> None:
    """SLOMet's message quotes the measured p99, which moves every tick under traffic: alone it
    rewrites the EdgeModel's status (and status.json in `hatswarm up`) at most every 30 s;
    a verdict that flips is written at once."""
    from hatswarm_operator.api.edgemodel import GenerationStatus
    from hatswarm_operator.control.runtime import MODEL_METRICS
    from hatswarm_operator.core.slo import slo_condition

    now = [0.0]
    rt = runtime(now)

    def model(p99: float) -> EdgeModelStatus:
        measured = GenerationStatus(ttft_p50_ms=90.0, ttft_p99_ms=p99)
        cond = slo_condition(300, measured, now[0], 1)
        return EdgeModelStatus(phase="Ready", ready="1/1", conditions=[cond])

    assert rt._changed("em/chat", model(120.4), MODEL_METRICS)
    for p99 in (131.7, 118.2, 240.9):  # new figures, each tick, all within the target
        now[0] += 1
        assert not rt._changed("em/chat", model(p99), MODEL_METRICS)
    now[0] += 1
    assert rt._changed("em/chat", model(420.0), MODEL_METRICS)  # above it: at once
    now[0] += 1
    assert not rt._changed("em/chat", model(450.0), MODEL_METRICS)
    now[0] += COST_STATUS_SECONDS
    assert rt._changed("em/chat", model(460.0), MODEL_METRICS)  # the figure, every 30 s


def test_cloud_counters_are_live_measurements_in_pool_status() -> None:
    """Agents' cloud counters climb with every fallback answer: priced into the pool status,
    but alone they rewrite it at most every 30 s, like queue depths."""
    now = [0.0]
    rt = runtime(now)

    def pool(cloud: int, ready: bool = True) -> InferencePoolStatus:
        return InferencePoolStatus(nodes=[PoolNode(name="pi-1", ready=ready, cloud_requests=cloud)])

    assert rt._changed("pool", pool(0), POOL_METRICS)
    now[0] += 1
    assert not rt._changed("pool", pool(40), POOL_METRICS)
    assert rt._changed("pool", pool(40, ready=False), POOL_METRICS)
    now[0] += COST_STATUS_SECONDS
    assert rt._changed("pool", pool(90, ready=False), POOL_METRICS)


def test_a_streamed_status_counts_from_before_it_arrived_and_agreement_ends_a_note() -> None:
    """A status that was on its way while the loop acted must not erase the loop's note (it
    would place the same replica again); one that shows the action ends the note at once."""
    from hatswarm_operator.control.runtime import STREAM_SLACK_S
    from hatswarm_operator.core.inventory import NodeReport

    now = [100.0]
    rt = runtime(now)
    rt.nodes = {"pi-1": NodeState("pi-1", "a:1", up=True, last_seen=99.0)}
    rt._note("pi-1", "vision", "1", ModelState.LOADING)  # a load sent at 100
    now[0] = 100.2  # a status sent before the load arrives just after it
    rt._fold("pi-1", "a:1", NodeReport(), now[0], 3)
    rt._reported_at["pi-1"] = now[0] - STREAM_SLACK_S  # as the stream reader stamps it
    [view] = rt.planning_view()
    assert [(o.name, o.state) for o in view.models] == [("vision", ModelState.LOADING)]
    now[0] = 100.3  # the next one shows the load: the note is done
    rt._fold("pi-1", "a:1", NodeReport(models=(ModelObs("vision", "1", ModelState.READY),)),
             now[0], 3)  # fmt: skip
    rt._reported_at["pi-1"] = now[0] - STREAM_SLACK_S
    [view] = rt.planning_view()
    assert [(o.name, o.state) for o in view.models] == [("vision", ModelState.READY)]
    assert rt._acted == {}


def test_an_slo_flip_reaches_the_sink_once_while_the_stored_status_lags() -> None:
    """`hatswarm up` never feeds status back into the models it ticks on (and the informer
    cache lags a status patch): every tick below sees the manifest's empty status, while the
    agent's p99 moves each tick. One Event per flip, whatever the messages."""
    from hatswarm_operator.core.inventory import GenerationObs
    from hatswarm_operator.local.status import LocalSink

    from tests.unit.operator.factories import POOL_LABELS, make_model, make_pool

    sink = LocalSink(None)
    rt = PoolRuntime(AgentClient(timeout_s=1.0), sink)
    pool = make_pool(generation=1, nodeSelector=POOL_LABELS)
    chat = make_model("chat", replicas=1, task="generate", slo={"ttftP99Ms": 300})

    async def ticks() -> None:
        for p99 in (420, 450, 470, 240, 250, 420):
            gen = GenerationObs(ttft_p50_ms=100.0, ttft_p99_ms=p99, tokens_per_second=40.0)
            obs = ModelObs("chat", "1", ModelState.READY, generation=gen)
            rt.nodes = {
                "pi-1": NodeState("pi-1", "127.0.0.1:9", labels=dict(POOL_LABELS),
                                  accelerator="cpu", up=True, last_seen=rt.clock(), models=(obs,))
            }  # fmt: skip
            await rt.tick(pool, [chat], probe=False)
        await rt.close()

    asyncio.run(ticks())
    flips = [(e.reason, e.message) for _, e in sink.events if e.reason.startswith("SLO")]
    assert [reason for reason, _ in flips] == ["SLOMissed", "SLOMet", "SLOMissed"]
    assert "p99 420 ms above" in flips[0][1] and "p99 240 ms within" in flips[1][1]
    assert flips[2][1] == flips[0][1]  # the same figures as the first miss: a new flip still
