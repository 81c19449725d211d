"""The control loop follows its agents' status streams while the node set changes under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_operator.api.inferencepool import InferencePoolStatus
from hatswarm_operator.control import converters
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.runtime import PoolRuntime
from hatswarm_operator.core.inventory import NodeState

from tests.polling import until
from tests.unit.operator.control.test_routing_generations import Sink
from tests.unit.operator.factories import POOL_LABELS, make_pool


@dataclass
class Streaming(AgentClient):
    """Agents that stream their status: `models[address]` names what each holds; a change is
    sent on the stream at once (`changed`), else a heartbeat every `heartbeat_s`."""

    models: dict[str, list[str]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        super().__init__()

    def _status(self, address: str) -> control_pb2.NodeStatusResponse:
        return control_pb2.NodeStatusResponse(
            node_name=address,
            accelerator="cpu",
            models=[
                control_pb2.ModelStatus(name=m, version="1", state=control_pb2.MODEL_STATE_READY)
                for m in self.models.get(address, [])
            ],
        )

    async def status(self, address: str) -> control_pb2.NodeStatusResponse:
        return self._status(address)

    async def watch(
        self, address: str, heartbeat_s: float, live_s: float
    ) -> AsyncIterator[control_pb2.NodeStatusUpdate]:
        while True:
            changed = self.changed
            yield control_pb2.NodeStatusUpdate(status=self._status(address))
            try:
                await asyncio.wait_for(changed.wait(), heartbeat_s)
            except TimeoutError:
                yield control_pb2.NodeStatusUpdate()

    def change(self, address: str, models: list[str]) -> None:
        self.models[address] = models
        self.changed.set()
        self.changed = asyncio.Event()


def node(name: str) -> NodeState:
    return NodeState(name, name, labels=dict(POOL_LABELS))


async def test_a_node_removed_during_a_probe_round_does_not_stop_the_streams() -> None:
    """A relist that drops a node's Pod (set_nodes) lands while `probe_forever` is between the
    groups of a round: the rest of the round must skip that node, and the streams of the other
    nodes must go on (they once all stopped, and the pool's view froze)."""
    agents = Streaming()
    runtime = PoolRuntime(agents, Sink())
    runtime.heartbeat_s = 0.2
    runtime.set_nodes([node(n) for n in ("a:1", "b:1", "c:1")])
    interval = 1.5  # three groups, 0.5 s apart: "c:1" is looked at 1 s into each round
    follow = asyncio.create_task(
        runtime.probe_forever(lambda: 3, lambda: interval, lambda: None, slices=3, watch=True)
    )
    try:
        await until(lambda: runtime.streamed() == 3, within=10)
        runtime.set_nodes([node("a:1"), node("b:1")])  # "c:1" is gone, mid-round
        await asyncio.sleep(2 * interval)  # the rest of this round and the whole next one
        assert not follow.done(), follow.exception()
        agents.change("a:1", ["vision"])
        await until(lambda: [m.name for m in runtime.nodes["a:1"].models] == ["vision"], 10)
        assert runtime.streamed() == 2
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)


@dataclass
class ReportDuringPublish(Sink):
    """A sink whose pool-status write is slow enough for a node's report to land meanwhile."""

    runtime: PoolRuntime | None = None
    published: list[InferencePoolStatus] = field(default_factory=list)
    landing: control_pb2.NodeStatusResponse | None = None

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None:
        self.published.append(status)
        if self.landing is not None and self.runtime is not None:
            report, self.landing = converters.node_report(self.landing), None
            self.runtime._fold("a:1", "a:1", report, self.runtime.clock(), 3)


async def test_a_report_that_lands_while_a_tick_publishes_is_planned_on_next_tick() -> None:
    agents = Streaming()
    sink = ReportDuringPublish()
    runtime = sink.runtime = PoolRuntime(agents, sink, clock=lambda: 1000.0)
    runtime.set_nodes([node("a:1")])
    pool = make_pool(nodeSelector=POOL_LABELS, accelerators=["cpu"])
    await runtime.tick(pool, [], probe=False)  # probes the new node, plans, publishes
    assert [n.models for n in sink.published[-1].nodes] == [[]]

    agents.models["a:1"] = ["vision"]
    sink.landing = agents._status("a:1")  # arrives while the next status is being written
    runtime.set_nodes([node("a:1"), node("b:1")])  # a node joins: a status to write
    await runtime.tick(pool, [], probe=False)
    assert [n.models for n in sink.published[-1].nodes] == [[], []]
    await runtime.tick(pool, [], probe=False)  # must not look quiet: it has not seen "vision"
    assert [n.models for n in sink.published[-1].nodes] == [["vision@1"], []]


@dataclass
class FailingOnce(Sink):
    """A sink whose first pool-status write fails (the API server away for a moment)."""

    published: list[InferencePoolStatus] = field(default_factory=list)
    failures: int = 1

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("API server unreachable")
        self.published.append(status)


async def test_a_status_write_that_failed_is_written_on_the_next_tick() -> None:
    sink = FailingOnce()
    runtime = PoolRuntime(Streaming(), sink, clock=lambda: 1000.0)
    runtime.set_nodes([node("a:1")])
    pool = make_pool(nodeSelector=POOL_LABELS, accelerators=["cpu"])
    with pytest.raises(ConnectionError):
        await runtime.tick(pool, [], probe=False)
    await runtime.tick(pool, [], probe=False)  # nothing changed since: written all the same
    assert [n.name for n in sink.published[-1].nodes] == ["a:1"]
