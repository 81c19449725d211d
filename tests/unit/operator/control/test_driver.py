"""The one loop driver both adapters use: a tick that raises is counted, never fatal."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hatswarm_operator.control.driver import Restarting, SkipTick, drive

log = logging.getLogger("test.driver")


async def test_a_failing_tick_is_recorded_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script: list[Exception | None] = [None, RuntimeError("boom"), SkipTick(7.0), None]
    results: list[bool] = []
    waits: list[float] = []

    async def tick() -> None:
        outcome = script.pop(0)
        if outcome is not None:
            raise outcome

    async def pause(seconds: float) -> bool:
        waits.append(seconds)
        return bool(script)

    with caplog.at_level(logging.WARNING, logger="test.driver"):
        await drive(tick, interval=lambda: 1.5, pause=pause, logger=log, on_result=results.append)
    assert results == [True, False, True]  # the skipped tick records nothing
    assert waits == [1.5, 1.5, 7.0, 1.5]
    assert "pool tick failed: RuntimeError: boom" in caplog.text


async def test_a_prober_that_ends_is_started_again_and_reported() -> None:
    """An ended prober must not go unnoticed: failover would silently stop (see Restarting)."""
    runs: list[int] = []
    errors: list[BaseException | None] = []
    forever = asyncio.Event()

    async def prober() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("probe bug")
        if len(runs) == 2:
            return  # a bug that returns is an end too
        await forever.wait()

    watched = Restarting(prober, name="probes", backoff=lambda: 0.05, on_restart=errors.append)
    started = asyncio.get_running_loop().time()
    watched.start()
    for _ in range(200):
        if len(runs) == 3:
            break
        await asyncio.sleep(0.01)
    waited = asyncio.get_running_loop().time() - started
    assert runs == [0, 1, 2]
    assert watched.restarts == 2
    assert isinstance(errors[0], RuntimeError) and str(errors[0]) == "probe bug"
    assert errors[1] is None
    assert waited >= 0.1  # two quick deaths: each restart waited out the backoff, no spin
    await watched.stop()
    await asyncio.sleep(0.1)
    assert runs == [0, 1, 2]  # stopping cancels it without a restart
    assert watched.restarts == 2


async def test_stopping_cancels_a_pending_restart() -> None:
    runs: list[int] = []

    async def prober() -> None:
        runs.append(1)
        raise RuntimeError("dies at once")

    watched = Restarting(prober, name="probes", backoff=lambda: 0.2, on_restart=lambda _: None)
    watched.start()
    await asyncio.sleep(0.05)  # it died; the restart waits for the backoff
    await watched.stop()
    await asyncio.sleep(0.3)
    assert runs == [1]
