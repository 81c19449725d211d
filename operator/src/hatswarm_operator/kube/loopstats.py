"""How the operator's event loop keeps up: tick durations and the loop's lag, recent window.

Every pool's loop, every kopf handler and every agent call share one asyncio event loop; if
anything hogs it (a thousand probes' replies parsed at once, a big list parsed in Python),
every timer fires late, and failure detection with it. A sampler sleeps `interval_s` over and
over and records how late it wakes: that lateness is the loop lag. Both series feed the
Prometheus histograms and a summary over the last minute (served by the liveness probe, read
by the fleet benchmark).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Callable

from hatswarm_operator.control import metrics


def freeze_heap() -> None:
    """Move every object alive now out of the cyclic collector's sight (`gc.freeze`).

    Python's full collections walk every tracked object; with kopf, the kubernetes client,
    pydantic and a thousand nodes' state that is a few hundred thousand objects, and one walk
    stalled the loop for a third of a second here, every few seconds. What exists once the
    operator is up (modules, caches, the first tick's state) lives as long as the process,
    so it is frozen; what ticks create afterwards is collected as usual.
    """
    gc.collect()
    gc.freeze()


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class LoopStats:
    """Recent tick durations and loop-lag samples, with their time of arrival."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.ticks: deque[tuple[float, float]] = deque(maxlen=100_000)
        self.lags: deque[tuple[float, float]] = deque(maxlen=100_000)

    def tick(self, seconds: float) -> None:
        self.ticks.append((self.clock(), seconds))

    def lag(self, seconds: float) -> None:
        self.lags.append((self.clock(), seconds))
        metrics.LOOP_LAG_SECONDS.observe(seconds)

    async def sample_lag(self, interval_s: float = 0.1) -> None:
        """Run forever: sleep `interval_s`, record how much later than asked it woke."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(interval_s)
            self.lag(max(0.0, loop.time() - asked - interval_s))

    def summary(self, window_s: float | None = None) -> dict[str, float]:
        """Quantiles over the last `window_s` (default: the instance's window)."""
        window = self.window_s if window_s is None else window_s
        since = self.clock() - window
        ticks = [d for t, d in self.ticks if t >= since]
        lags = [d for t, d in self.lags if t >= since]
        return {
            "window_s": window,
            "ticks": len(ticks),
            "tick_p50_s": round(quantile(ticks, 0.5), 4),
            "tick_p99_s": round(quantile(ticks, 0.99), 4),
            "tick_max_s": round(max(ticks, default=0.0), 4),
            "lag_p50_s": round(quantile(lags, 0.5), 4),
            "lag_p99_s": round(quantile(lags, 0.99), 4),
            "lag_max_s": round(max(lags, default=0.0), 4),
        }

    def recent_ticks(self) -> list[tuple[float, float]]:
        """(seconds ago, duration) of every tick in the window, oldest first."""
        now = self.clock()
        return [(round(now - t, 3), round(d, 4)) for t, d in self.ticks if now - t <= self.window_s]
