"""A bounded queue per model and the dynamic micro-batcher that drains it.

Admission is counted (waiting + running requests); past `limit` a request is refused at once
with QueueFullError rather than queued behind minutes of work. Worker coroutines (one per
backend thread) take the head request and, when the model has a dynamic batch dimension, every
compatible request queued behind it up to `max_batch_size` items (compatible: same shapes past
the batch dimension and the same LoRA adapter, or none). While a batch runs, new
requests pile up and the next take merges them, so batching costs no delay when the queue is
empty; `max_queue_delay_s` only adds a wait when another batch is already running. Inference
runs in a thread pool, never on the event loop; merging and splitting happen there too.

A request that finds the queue idle skips all of that: it goes from `submit` straight to a
worker thread (one hand-off each way, no batcher coroutine in between). Work that only pays
while nothing else runs happens when the queue has been idle for IDLE_S: re-timing the ways a
lone request may run (never by sending a real request the slower way) and, after a burst,
giving back the memory the burst took (`LoadedModel.maintain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from hatswarm_agent.backends.base import Array, BackendError, LoadedModel
from hatswarm_agent.serving.errors import ModelNotReadyError, QueueFullError
from hatswarm_agent.serving.tensors import DecodedRequest

if TYPE_CHECKING:
    from hatswarm_agent.serving.adapters import AdapterSet

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Result:
    """A request's outputs and where its time went."""

    outputs: dict[str, Array]
    queue_s: float
    compute_s: float


@dataclass(slots=True, eq=False)  # compared by identity (in-flight list removal)
class _Pending:
    request: DecodedRequest
    future: asyncio.Future[Result]
    enqueued: float = field(default_factory=time.perf_counter)
    adapter: str = ""  # LoRA adapter to run with; "" runs the base model


# Called once per backend run with (items in the batch, seconds the run took).
ExecutionHook = Callable[[int, float], None]


@dataclass(slots=True)
class AloneChoice:
    """Which way to run a lone request: `run_alone` (wide) or `run`, by measured time per item.

    Each way keeps a moving average, seeded by the backend's timing at load; the faster one is
    used. Real requests go the way that is faster, so that way learns from them; the other is
    re-timed on zeros while the queue is idle (`ModelQueue` calls `retime`), which is how a
    change in the node's load is noticed without making a request slower.

    One exception, bounded: while lone requests run narrow, the wide way's figure ages, and a
    queue that is never idle for long (a steady client) would keep it for good. A timing taken
    while something else held the cores (the wide way slows most then) would pin every lone
    request to the one-thread way, ~1.7x slower, for as long as the traffic lasts (measured:
    whole benchmark blocks at 15 ms instead of 9 on the CNN). So once the wide figure is
    RECHECK_S old, one lone request tries it and its time replaces the figure; a try that
    confirms the narrow way doubles the wait before the next (up to RECHECK_MAX_S), so a node
    that stays busy pays one slower request a minute at most.
    """

    wide_s: float = 0.0
    narrow_s: float = 0.0
    on_wide: bool | None = None  # the way chosen last; None after a fresh timing of both
    wide_at: float = 0.0  # when the wide way was last timed or run (monotonic seconds)
    recheck_s: float = 1.0  # how old the wide figure may get, on the narrow way, before a try
    trying: bool = False  # the wide run last chosen was a try: its time replaces the figure

    WEIGHT = 0.3
    # Leave the way in use only for one this much faster. Only that way learns from requests,
    # and a few slow runs (a wake-up, a scheduler hiccup) must not flip the choice to the
    # other way for good: its figure is stale and nothing re-measures it under steady traffic
    # (measured: SqueezeNet lone requests stuck on the 1-thread way for whole runs, 2.5x raw).
    # A real slowdown (beside a busy process the wide way goes 2-5x slower) still switches.
    MARGIN = 0.25
    RECHECK_S = 1.0
    RECHECK_MAX_S = 60.0

    def wide(self, now: float) -> bool:
        if not self.wide_s or not self.narrow_s:
            return not self.wide_s  # unmeasured: only at start, before any timing
        was = self.on_wide
        if self.on_wide is None:
            self.on_wide = self.wide_s <= self.narrow_s
        elif self.on_wide:
            self.on_wide = self.wide_s <= self.narrow_s * (1 + self.MARGIN)
        else:
            self.on_wide = self.wide_s * (1 + self.MARGIN) <= self.narrow_s
        if was is not None and was != self.on_wide:
            log.debug(
                "lone requests now run the %s way (wide %.2f ms, narrow %.2f ms)",
                "wide" if self.on_wide else "narrow", self.wide_s * 1e3, self.narrow_s * 1e3,
            )  # fmt: skip
        if self.on_wide:
            self.trying = False
            self.recheck_s = self.RECHECK_S  # on the wide way: a later narrow spell backs off anew
            return True
        if now - self.wide_at < self.recheck_s:
            return False
        log.debug("a lone request tries the wide way (its %.2f ms is %.1f s old)",
                  self.wide_s * 1e3, now - self.wide_at)  # fmt: skip
        self.trying = True  # the wide figure is stale: one lone request measures it
        self.wide_at = now
        self.recheck_s = min(self.recheck_s * 2, self.RECHECK_MAX_S)
        return True

    def learn(self, wide: bool, seconds_per_item: float, now: float) -> None:
        if wide:
            old = self.wide_s or seconds_per_item
            if self.trying:
                old = seconds_per_item  # the stale figure goes: this run is the measurement
                self.on_wide = None  # fresh against narrow's, which learns all along: no margin
            self.wide_s = old + self.WEIGHT * (seconds_per_item - old)
            self.wide_at = now
            self.trying = False
        else:
            old = self.narrow_s or seconds_per_item
            self.narrow_s = old + self.WEIGHT * (seconds_per_item - old)

    def retime(self, narrow_s: float, wide_s: float, now: float) -> None:
        """Fresh idle-time measurements of both ways replace the averages."""
        if narrow_s > 0:
            self.narrow_s = narrow_s
        if wide_s > 0:
            self.wide_s = wide_s
            self.wide_at = now
        self.on_wide = None  # both measured alike just now: the faster one, no margin
        self.recheck_s = self.RECHECK_S
        log.debug("lone ways re-timed: wide %.2f ms, narrow %.2f ms", wide_s * 1e3, narrow_s * 1e3)


T = TypeVar("T")


class Workers:
    """A fixed set of worker threads with the leanest hand-off to and from the event loop.

    A job is put on a SimpleQueue (a waiting thread wakes on it at once) and its result comes
    back through one `call_soon_threadsafe`: no concurrent Future, no chained callbacks, which
    is what `run_in_executor` costs on top of the two thread wake-ups.
    """

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, args = job
            try:
                result = fn(*args)
            except BaseException as exc:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_settle_error, future, exc)
                continue
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _settle_error(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


# Idle this long (no request waiting or running) before maintenance runs: re-timing the lone
# ways, giving back burst memory. Re-timing at most every RETIME_EVERY_S.
IDLE_S = 1.0
RETIME_EVERY_S = 60.0


def merge(requests: list[DecodedRequest]) -> dict[str, Array]:
    """Concatenate compatible requests along the batch dimension."""
    if len(requests) == 1:
        return requests[0].inputs
    names = requests[0].inputs.keys()
    return {n: np.concatenate([r.inputs[n] for r in requests]) for n in names}


def split(outputs: dict[str, Array], sizes: list[int]) -> list[dict[str, Array]]:
    """Slice batched outputs back into per-request views (no copies)."""
    if len(sizes) == 1:
        return [outputs]
    total = sum(sizes)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise BackendError(
                f"output '{name}' has shape {list(arr.shape)}, expected batch {total} first"
            )
    parts: list[dict[str, Array]] = []
    offset = 0
    for n in sizes:
        parts.append({name: arr[offset : offset + n] for name, arr in outputs.items()})
        offset += n
    return parts


class ModelQueue:
    """Admission, batching and execution for one loaded model version."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        limit: int,
        max_batch_size: int,
        max_queue_delay_s: float,
        concurrency: int,
        on_execution: ExecutionHook | None = None,
        name: str = "model",
        adapters: AdapterSet | None = None,
        inline_max_items: int = 0,
    ) -> None:
        self.model = model
        # A backend may run a request faster when it has the device to itself (onnx.py: more
        # intra-op threads); the queue knows when that is: nothing else waiting or running.
        # Whether it is faster depends on what else the node runs (other pods take cores), so
        # lone runs are timed both ways and the faster kept, the other retried now and then.
        self._run_alone: Callable[[dict[str, Array]], dict[str, Array]] | None = (
            model.run_alone if model.runs_alone else None
        )
        self._alone = AloneChoice()
        self._alone.retime(*model.alone_times, time.monotonic())
        self._starts = 0  # runs started so far (was a lone run joined by another?)
        self._burst = False  # ran more than one item at once since the last maintenance
        self._retimed = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._maintaining: asyncio.Task[None] | None = None
        # Requests this small run on the event loop when nothing else waits: for a model that
        # computes in tens of microseconds, the two thread hops of the pool cost more than it.
        self.inline_max_items = inline_max_items
        self.adapters = adapters
        self.limit = limit
        self.max_batch_size = max_batch_size if model.max_batch_size else 0
        self.max_queue_delay_s = max_queue_delay_s
        self.concurrency = concurrency
        self._on_execution = on_execution
        self._pending: deque[_Pending] = deque()
        self._depth = 0
        self._running = 0
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._executor = Workers(concurrency, f"infer-{name}")
        self._closed = False
        self._inflight: list[list[_Pending]] = []

    @property
    def depth(self) -> int:
        """Requests admitted and not yet answered (waiting plus running)."""
        return self._depth

    async def submit(self, request: DecodedRequest, adapter: str = "") -> Result:
        """Queue one decoded request (to run with `adapter`, if any) and wait for its outputs."""
        if self._closed:
            raise ModelNotReadyError("model is unloading")
        if self._depth >= self.limit:
            raise QueueFullError(f"queue full ({self._depth}/{self.limit} requests)")
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        idle = not self._running and not self._pending
        if idle and not adapter:
            if request.batch <= self.inline_max_items:
                return self._run_inline(request)
            return await self._run_lone(request)
        if self._wakeup is None:
            self._start()
        assert self._wakeup is not None
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._depth += 1
        try:
            self._pending.append(_Pending(request, future, adapter=adapter))
            self._wakeup.set()
            return await future
        finally:
            self._depth -= 1
            self._after_request()

    async def _run_lone(self, request: DecodedRequest) -> Result:
        """The idle queue's path: straight to a worker thread, the faster lone way."""
        wide = self._run_alone is not None and self._alone.wide(time.monotonic())
        self._depth += 1
        self._running += 1
        self._starts += 1
        starts = self._starts
        if request.batch > 1:
            self._burst = True  # memory to give back once idle (see _after_request)
        try:
            outputs, seconds = await self._executor.run(self._run_one, request.inputs, wide)
        finally:
            self._running -= 1
            self._depth -= 1
            if self._pending and self._wakeup is not None:
                self._wakeup.set()  # requests that came meanwhile: a worker may now take them
            self._after_request()
        if self._run_alone is not None and self._starts == starts:  # stayed alone: a fair sample
            self._alone.learn(wide, seconds / max(1, request.batch), time.monotonic())
        if self._on_execution is not None:
            self._on_execution(request.batch, seconds)
        return Result(outputs, 0.0, seconds)

    def _run_one(self, inputs: dict[str, Array], wide: bool) -> tuple[dict[str, Array], float]:
        run = self._run_alone if wide and self._run_alone is not None else self.model.run
        start = time.perf_counter()
        outputs = run(inputs)
        return outputs, time.perf_counter() - start

    def _after_request(self) -> None:
        """Once nothing waits or runs, schedule maintenance for when the queue stays idle."""
        if self._depth or self._closed or self._idle_timer is not None:
            return
        if not self.model.maintains:
            return
        due = time.monotonic() - self._retimed >= RETIME_EVERY_S
        if self._burst or (due and self._run_alone is not None):
            loop = asyncio.get_running_loop()
            self._idle_timer = loop.call_later(IDLE_S, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_timer = None
        if self._depth or self._closed or self._maintaining is not None:
            return
        self._maintaining = asyncio.get_running_loop().create_task(self._maintain())

    async def _maintain(self) -> None:
        """Idle-time upkeep in a worker thread: memory back after a burst, lone ways re-timed."""
        reclaim = self._burst
        retime = self._run_alone is not None and time.monotonic() - self._retimed >= RETIME_EVERY_S
        self._burst = False
        try:
            times = await self._executor.run(self.model.maintain, reclaim, retime)
        except Exception:
            log.exception("idle maintenance failed")
            return
        finally:
            self._maintaining = None
        if retime:
            self._retimed = time.monotonic()
            if times is not None:
                self._alone.retime(*times, time.monotonic())
            if not self.model.runs_alone:  # the backend let its wide way go
                self._run_alone = None

    def _run_inline(self, request: DecodedRequest) -> Result:
        """The fast path for tiny models on an idle queue (see `inline_max_items`)."""
        self._depth += 1
        try:
            start = time.perf_counter()
            outputs = self.model.run(request.inputs)
            seconds = time.perf_counter() - start
        finally:
            self._depth -= 1
        if self._on_execution is not None:
            self._on_execution(request.batch, seconds)
        return Result(outputs, 0.0, seconds)

    def _start(self) -> None:
        self._wakeup = asyncio.Event()
        self._workers = [
            asyncio.create_task(self._work(), name=f"batcher-{i}") for i in range(self.concurrency)
        ]

    def _take(self) -> list[_Pending]:
        """The head request plus compatible followers (same shapes past dim 0), FIFO."""
        pending = self._pending
        while pending and pending[0].future.done():  # cancelled by its caller
            pending.popleft()
        if not pending:
            return []
        first = pending.popleft()
        batch = [first]
        if self.max_batch_size:
            self._extend(batch, first.request.batch)
        return batch

    def _extend(self, batch: list[_Pending], total: int) -> int:
        pending = self._pending
        key, adapter = batch[0].request.key, batch[0].adapter
        while pending and total < self.max_batch_size:
            nxt = pending[0]
            if nxt.future.done():
                pending.popleft()
                continue
            if (
                nxt.request.key != key
                or nxt.adapter != adapter
                or total + nxt.request.batch > self.max_batch_size
            ):
                break
            batch.append(pending.popleft())
            total += nxt.request.batch
        return total

    async def _fill(self, batch: list[_Pending]) -> None:
        """Wait up to max_queue_delay for more compatible requests while the device is busy."""
        assert self._wakeup is not None
        total = sum(p.request.batch for p in batch)
        deadline = time.perf_counter() + self.max_queue_delay_s
        while total < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
            total = self._extend(batch, total)
        if self._pending:
            self._wakeup.set()  # leftovers: let another worker see them

    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            if self._running >= self.concurrency:  # a lone run holds a thread too
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take()
            if not batch:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_queue_delay_s > 0 and self.max_batch_size and self._running > 0:
                await self._fill(batch)
            started = time.perf_counter()
            alone = (
                self._run_alone is not None
                and not self._running
                and not self._pending
                and not batch[0].adapter
            )
            wide = alone and self._alone.wide(time.monotonic())
            self._running += 1
            self._starts += 1
            starts = self._starts
            self._inflight.append(batch)
            try:
                parts, seconds = await self._executor.run(self._run, batch, wide)
            except Exception as exc:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finally:
                self._running -= 1
                self._inflight.remove(batch)
                if self._pending:
                    self._wakeup.set()
            items = sum(p.request.batch for p in batch)
            if items > 1 or self._running:
                self._burst = True
            if alone and self._starts == starts:  # it stayed alone: a fair sample
                self._alone.learn(wide, seconds / items, time.monotonic())
            if self._on_execution is not None:
                self._on_execution(items, seconds)
            for p, outputs in zip(batch, parts, strict=True):
                if not p.future.done():
                    p.future.set_result(Result(outputs, started - p.enqueued, seconds))

    def _run(
        self, batch: list[_Pending], wide: bool = False
    ) -> tuple[list[dict[str, Array]], float]:
        """Worker thread: merge, run (with the batch's one adapter, if any), split."""
        requests = [p.request for p in batch]
        inputs = merge(requests)
        adapter = batch[0].adapter
        start = time.perf_counter()
        if not adapter:
            run = self._run_alone if wide and self._run_alone is not None else self.model.run
            outputs = run(inputs)
        elif self.adapters is None:
            raise BackendError(f"adapter '{adapter}' requested but this model has none")
        else:
            outputs = self.adapters.run(inputs, adapter)
        seconds = time.perf_counter() - start
        return split(outputs, [r.batch for r in requests]), seconds

    async def close(self, grace_s: float = 5.0) -> None:
        """Refuse new work, let admitted requests finish for up to `grace_s`, fail the rest."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._maintaining is not None:
            self._maintaining.cancel()
        deadline = time.monotonic() + grace_s
        while self._depth > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - rare path
            await asyncio.sleep(0.01)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        leftovers = list(self._pending) + [p for b in self._inflight for p in b]
        self._pending.clear()
        for p in leftovers:
            if not p.future.done():
                p.future.set_exception(ModelNotReadyError("model was unloaded"))
        self._executor.shutdown()
