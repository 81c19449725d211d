"""Local mode's loop survives a tick that raises, as the kopf daemon does (one driver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.local.pool import LocalPool

from tests.unit.operator.factories import make_pool


def pool() -> InferencePool:
    return make_pool(failureDetection={"probeIntervalSeconds": 0.1})


async def test_a_tick_that_raises_does_not_end_local_modes_loop(tmp_path: Path) -> None:
    local = LocalPool(pool(), [], [], tmp_path)  # no nodes: no agent processes
    real_tick = local.runtime.tick
    calls = 0

    async def flaky_tick(p: InferencePool, models: list[EdgeModel]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bad tick")
        return await real_tick(p, models)

    local.runtime.tick = flaky_tick  # type: ignore[method-assign]
    async with local:
        # `wait` re-raises if the loop's task ended; it must keep ticking instead.
        assert await local.wait(lambda _: local.ticks >= 2, within=10.0)
    assert calls >= 3
