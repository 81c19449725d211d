"""The operator follows agents over their status streams: real `hatswarm-agent` processes, the
real AgentClient and PoolRuntime.probe_forever.

A SIGKILLed agent (connection reset, then refused) and a SIGSTOPped one (the keepalive ping
goes unanswered) leave the pool within the bound the README states, each confirmed by one
failed probe; SIGCONT brings the stream and the node back. An agent without the RPC
(UNIMPLEMENTED, the simulated fleet's `--no-stream`) is probed as before. The stream carries
the control token and falls back to the previous one during a rotation.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.credentials import AgentCredentials
from hatswarm_operator.control.runtime import PoolRuntime
from hatswarm_operator.core.inventory import NodeState

from tests.agentproc import AgentProcess, start_agents
from tests.integration.operator.simworld import sim_fleet
from tests.polling import until

pytestmark = pytest.mark.integration

THRESHOLD = 3
INTERVAL_S = 1.0
KILLED_BOUND_S = 2.0  # reset at once + one refused probe (+ a loaded machine's slack)
FROZEN_BOUND_S = 5.0  # keepalive 1 s + 1 s unanswered, one probe's 1 s deadline (+ slack)


class NullSink:
    async def model_status(self, *a: Any) -> None: ...

    async def pool_status(self, *a: Any) -> None: ...

    async def event(self, *a: Any) -> None: ...


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    token = tmp_path / "control-token"
    token.write_text("first-control\n")
    procs = start_agents([["--control-token-file", str(token)]] * 2)
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            os.kill(p.proc.pid, signal.SIGCONT)
        p.stop()


def follow(runtime: PoolRuntime, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(
            runtime.probe_forever(lambda: THRESHOLD, lambda: INTERVAL_S, lambda: None)
        )
        try:
            await body()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runtime.client.close()

    asyncio.run(main())


def test_killed_and_frozen_agents_leave_within_the_bound_and_come_back(
    agents: list[AgentProcess],
) -> None:
    a, b = agents
    client = AgentClient(credentials=AgentCredentials(token="first-control"))
    runtime = PoolRuntime(client, NullSink())  # type: ignore[arg-type]
    runtime.set_nodes([NodeState("a", a.address), NodeState("b", b.address)])

    def in_pool(name: str) -> bool:
        return runtime.nodes[name].in_pool

    async def body() -> None:
        # A rotation under way: the client's new token is not the agents' yet.
        await client.set_credentials(AgentCredentials(token="second-control"))
        await until(lambda: runtime.streamed() == 2 and in_pool("a") and in_pool("b"), 30)

        os.kill(b.proc.pid, signal.SIGSTOP)
        frozen = await until(lambda: not in_pool("b"), FROZEN_BOUND_S + 5)
        assert frozen <= FROZEN_BOUND_S, f"a frozen agent left after {frozen:.1f}s"
        assert "DEADLINE_EXCEEDED" in runtime.nodes["b"].last_error
        assert in_pool("a") and runtime.stream_breaks == 1
        os.kill(b.proc.pid, signal.SIGCONT)
        await until(lambda: in_pool("b") and runtime.streamed() == 2, 15)

        a.proc.kill()
        killed = await until(lambda: not in_pool("a"), KILLED_BOUND_S + 5)
        assert killed <= KILLED_BOUND_S, f"a killed agent left after {killed:.1f}s"
        print(f"frozen agent out after {frozen:.2f}s, killed agent out after {killed:.2f}s")
        assert in_pool("b")

    follow(runtime, body)


def test_a_blip_that_one_probe_outlives_keeps_the_node() -> None:
    """The stream breaks while the agent keeps answering (a blip): the confirming probe answers,
    the node never leaves, the stream comes back."""
    with sim_fleet(1, processes=1) as fleet:
        [name] = fleet.names
        runtime = PoolRuntime(AgentClient(), NullSink())  # type: ignore[arg-type]
        runtime.set_nodes([NodeState(name, fleet.address(name))])
        left: list[bool] = []

        async def body() -> None:
            await until(lambda: runtime.streamed() == 1 and runtime.nodes[name].in_pool, 30)

            async def watch_membership() -> None:
                while True:
                    left.append(not runtime.nodes[name].in_pool)
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch_membership())
            await asyncio.to_thread(fleet.drop_streams, name)
            await until(lambda: runtime.stream_breaks == 1 and runtime.streamed() == 1, 15)
            watcher.cancel()

        follow(runtime, body)
        assert not any(left)


def test_agents_without_the_stream_are_probed() -> None:
    with sim_fleet(2, processes=1, stream=False) as fleet:
        runtime = PoolRuntime(AgentClient(), NullSink())  # type: ignore[arg-type]
        runtime.set_nodes([NodeState(n, fleet.address(n)) for n in fleet.names])
        victim = fleet.names[0]

        async def body() -> None:
            await until(lambda: all(n.in_pool for n in runtime.nodes.values()), 30)
            calls = fleet.totals()["NodeStatus"]
            await asyncio.sleep(2.5)
            assert fleet.totals()["NodeStatus"] >= calls + 4  # each probed every second
            assert runtime.streamed() == 0
            await asyncio.to_thread(fleet.kill, victim)
            # No stream: the failure threshold counts probes (3 misses, about 2-3 s).
            gone = await until(lambda: not runtime.nodes[victim].in_pool, 10)
            assert gone >= (THRESHOLD - 1) * INTERVAL_S * 0.8

        follow(runtime, body)
