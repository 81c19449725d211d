"""Bounded polling for integration tests: wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(pred: Callable[[], T], within: float = 90.0, every: float = 0.2) -> T:
    """Call `pred` until it returns something truthy or `within` seconds pass; return its last
    value (falsy on timeout, so `assert poll(...)` fails with the state it saw)."""
    deadline = time.monotonic() + within
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)


async def until(pred: Callable[[], object], within: float) -> float:
    """Seconds until `pred()` holds, on the running event loop; fails after `within`."""
    started = time.monotonic()
    while not pred():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started
