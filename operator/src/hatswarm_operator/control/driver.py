"""The one loop that drives a pool's reconciles, for the kopf daemon and for `hatswarm up`.

Both adapters hand it their tick (read the world, `PoolRuntime.tick`) and their way of waiting
for the next one (kopf: the interval, a kick on a spec change or the daemon stopping; local
mode: the interval). A tick that raises is logged and counted, never fatal: a pool's loop
ends only when its adapter stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any


class SkipTick(Exception):  # noqa: N818 (a signal, not an error)
    """Nothing to reconcile this time (e.g. the pool's spec does not parse): no result is
    recorded, and the next tick comes after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"skipped, retry in {retry_after}s")
        self.retry_after = retry_after


def _ignore(ok: bool) -> None:
    pass


async def drive(
    tick: Callable[[], Awaitable[None]],
    *,
    interval: Callable[[], float],
    pause: Callable[[float], Awaitable[bool]],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    on_result: Callable[[bool], None] = _ignore,
) -> None:
    """Tick, record the result, pause; until `pause` returns False (or the task is cancelled).

    `interval()` is read after each tick (the tick may have read a new spec); `pause(seconds)`
    waits and says whether to go on. `on_result(ok)` runs after every tick that was not
    skipped, whether it succeeded or raised.
    """
    while True:
        try:
            await tick()
        except SkipTick as skip:
            wait = skip.retry_after
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one bad tick must not end the pool's loop
            logger.warning(f"pool tick failed: {type(err).__name__}: {err}")
            on_result(False)
            wait = interval()
        else:
            on_result(True)
            wait = interval()
        if not await pause(wait):
            return
