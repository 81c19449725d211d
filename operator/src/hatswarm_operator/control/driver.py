"""The one loop that drives a pool's reconciles, for the kopf daemon and for `hatswarm up`.

Both adapters hand it their tick (read the world, `PoolRuntime.tick`) and their way of waiting
for the next one (kopf: the interval, a kick on a spec change or the daemon stopping; local
mode: the interval). A tick that raises is logged and counted, never fatal: a pool's loop
ends only when its adapter stops it. `Restarting` keeps a task beside the ticks (the kopf
daemon's node prober) running the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
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


class Restarting:
    """A background task that is started again whenever it ends while it should run.

    The kopf daemon follows its pool's nodes in a task beside the ticks (the prober). Should
    that task end (an exception its own rounds do not catch, a BaseException, a return), the
    ticks go on and look healthy, but no failed node is noticed until the daemon restarts:
    failover would silently stop. So the task is watched, `on_restart(error)` is told (the
    adapter logs, counts and raises an Event), and it starts again: at once if it had run for
    at least `backoff()` seconds, else after that long, so a task that dies at once cannot
    spin.
    """

    def __init__(
        self,
        factory: Callable[[], Awaitable[None]],
        *,
        name: str,
        backoff: Callable[[], float],
        on_restart: Callable[[BaseException | None], None],
    ) -> None:
        self._factory = factory
        self._name = name
        self._backoff = backoff
        self._on_restart = on_restart
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._stopping = False
        self.restarts = 0

    def start(self) -> None:
        self._timer = None
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._task = loop.create_task(_awaited(self._factory), name=self._name)
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task is not self._task:
            return
        error = None if task.cancelled() else task.exception()
        self.restarts += 1
        self._on_restart(error)
        loop = asyncio.get_running_loop()
        ran = loop.time() - self._started
        delay = max(0.0, self._backoff() - ran)
        self._timer = loop.call_later(delay, self.start)

    async def stop(self) -> None:
        """Cancel the task and any restart still to come; wait for the task to end."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        task = self._task
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _awaited(factory: Callable[[], Awaitable[None]]) -> None:
    await factory()
