"""Saturation: low priority is shed with RESOURCE_EXHAUSTED, high priority waits; deadlines."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from tests.agentproc import free_port

from .conftest import (
    AgentProcess,
    Agents,
    control,
    make_request,
    metric,
    params,
    route,
    scrape,
    stub,
    table,
    with_priority,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slow_pool(identity_model: Path) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    """b: a simulated NPU at 40 requests/s, batch 1; a: a gateway allowing 2 in flight to b."""
    agents = Agents()
    try:
        b, a = agents.start_many(
            ["--model", f"ident={identity_model}", "--node-name", "b", "--backend", "simulated",
             "--accelerator", "hailo8l", "--option", "fps_batch1=40", "--option", "fps_batch8=40",
             "--max-batch-size", "1"],
            ["--gateway", "--node-name", "a", "--metrics-port", str(free_port())],
        )  # fmt: skip
        control(a.address).SetRoutingTable(table([route("ident", b.address)], queue_limit=2))
        yield a, b
    finally:
        agents.stop_all()


def _burst(address: str, priority: int, n: int) -> list[grpc.StatusCode]:
    s = stub(address)

    def one(i: int) -> grpc.StatusCode:
        try:
            s.ModelInfer(with_priority(make_request(request_id=str(i)), priority), timeout=20)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_low_priority_is_shed_when_saturated(slow_pool: tuple[AgentProcess, AgentProcess]) -> None:
    a, _ = slow_pool
    codes = _burst(a.address, 0, 12)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) > 0
    assert codes.count(grpc.StatusCode.OK) >= 2
    port = int(a.proc.args[a.proc.args.index("--metrics-port") + 1])  # type: ignore[union-attr,index]
    text = scrape(port)
    assert metric(text, "hatswarm_requests_shed_total", model="ident", priority="0") > 0


def test_high_priority_waits_instead(slow_pool: tuple[AgentProcess, AgentProcess]) -> None:
    a, _ = slow_pool
    codes = _burst(a.address, 5, 12)
    assert codes == [grpc.StatusCode.OK] * 12


def test_the_deadline_travels_with_the_hop(slow_pool: tuple[AgentProcess, AgentProcess]) -> None:
    a, b = slow_pool
    control(b.address).SetRoutingTable(table([], generation=1))
    ok = stub(a.address).ModelInfer(make_request(), timeout=5)
    assert params(ok)["hatswarm.node"] == "b"
    with pytest.raises(grpc.RpcError) as err:
        stub(a.address).ModelInfer(make_request(), timeout=0.01)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
