"""The one loop driver both adapters use: a tick that raises is counted, never fatal."""

from __future__ import annotations

import logging

import pytest
from hatswarm_operator.control.driver import SkipTick, drive

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
