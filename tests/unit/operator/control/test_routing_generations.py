"""The control loop compares the routing generation each agent reports with its own.

An agent that restarted (generation 0) or holds a table this control plane never pushed (a
newer generation) gets the current table again; the second case is flagged with a Warning
Event and the control plane's generation moves past the foreign one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.runtime import PoolRuntime
from hatswarm_operator.core.inventory import NodeState
from hatswarm_operator.core.plan import ResourceEvent

from tests.unit.operator.factories import POOL_LABELS, make_pool


@dataclass
class Agents(AgentClient):
    """Agents as the control loop sees them: each reports the generation it holds."""

    held: dict[str, int] = field(default_factory=dict)
    pushes: list[tuple[str, control_pb2.RoutingTable]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    async def status(self, address: str) -> control_pb2.NodeStatusResponse:
        return control_pb2.NodeStatusResponse(
            node_name=address, accelerator="cpu", routing_generation=self.held.get(address, 0)
        )

    async def set_routing(self, address: str, table: control_pb2.RoutingTable) -> int:
        self.pushes.append((address, table))
        self.held[address] = max(self.held.get(address, 0), table.generation)
        return self.held[address]


@dataclass
class Sink:
    events: list[ResourceEvent] = field(default_factory=list)

    async def model_status(self, namespace: str, name: str, status: EdgeModelStatus) -> None:
        pass

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None:
        pass

    async def event(self, namespace: str, event: ResourceEvent) -> None:
        self.events.append(event)


async def test_a_restarted_or_hijacked_agent_gets_the_table_again() -> None:
    ticks = itertools.count(1000)  # a clock that moves on every reading
    agents, sink = Agents(), Sink()
    runtime = PoolRuntime(agents, sink, clock=lambda: float(next(ticks)))
    pool = make_pool(nodeSelector=POOL_LABELS, accelerators=["cpu"])
    runtime.set_nodes([NodeState(n, n, labels=dict(POOL_LABELS)) for n in ("a:1", "b:1")])

    await runtime.tick(pool, [])
    first = {a: t.generation for a, t in agents.pushes}
    assert set(first) == {"a:1", "b:1"} and len(set(first.values())) == 1
    (generation,) = set(first.values())
    table = agents.pushes[0][1]
    assert {m.address for m in table.members} == {"a:1", "b:1"}  # the pool, announced
    agents.pushes.clear()
    await runtime.tick(pool, [])
    assert agents.pushes == []  # both report what was pushed: nothing to do

    agents.held["a:1"] = 0  # a restart: the table is gone
    await runtime.tick(pool, [])
    assert [(a, t.generation) for a, t in agents.pushes] == [("a:1", generation)]
    assert not [e for e in sink.events if e.reason == "RoutingTableMismatch"]
    agents.pushes.clear()

    agents.held["b:1"] = generation + 500  # a table this control plane never pushed
    await runtime.tick(pool, [])
    (flag,) = [e for e in sink.events if e.reason == "RoutingTableMismatch"]
    assert flag.type == "Warning" and "b:1" in flag.message
    assert {a for a, _ in agents.pushes} == {"a:1", "b:1"}
    assert all(t.generation == generation + 501 for _, t in agents.pushes)
    assert agents.held == {"a:1": generation + 501, "b:1": generation + 501}
    await runtime.tick(pool, [])
    assert len([e for e in sink.events if e.reason == "RoutingTableMismatch"]) == 1
