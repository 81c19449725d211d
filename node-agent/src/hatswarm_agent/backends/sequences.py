"""Load in sequences and tokens, and the bound on it.

`SequenceSlots` bounds how many sequences a model runs at once (and how many may wait), and
refuses the rest with `BackendBusyError`, which the serving layer answers as RESOURCE_EXHAUSTED
(HTTP 429), so a router can send the request to a peer: never an unbounded queue. Its `load`
is the `GenerationLoad` every generative backend reports, from the slots and the model's tokens."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass

from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.backends.genparams import BackendBusyError


@dataclass(frozen=True)
class GenerationLoad:
    """A generative model's load, in sequences and tokens, for routing and NodeStatus."""

    active_sequences: int
    queued_sequences: int
    max_sequences: int
    queued_prompt_tokens: int
    context_tokens_in_use: int  # prompt + generated tokens the active sequences hold (KV cache)
    context_tokens_capacity: int  # max_sequences x context length
    cached_prefix_tokens: int = 0  # KV cache kept by idle sequences for a later prompt's prefix
    prefix_hit_tokens: int = 0  # prompt tokens not prefilled again (prefix cache hits) since load


class SequenceSlots:
    """At most `limit` sequences at once and `queue` more waiting, first come first served.

    `acquire` waits for a slot or raises BackendBusyError when the wait queue is full too;
    `try_acquire` never waits. `release` may be called from any thread.
    """

    def __init__(self, limit: int, queue: int = 0) -> None:
        if limit < 1 or queue < 0:
            raise BackendError(f"sequence limits must be >= 1 (got {limit}) and >= 0 ({queue})")
        self.limit = limit
        self.queue = queue
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None], int]] = deque()

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def waiting_tokens(self) -> int:
        with self._lock:
            return sum(tokens for _, _, tokens in self._waiters)

    def load(
        self,
        context_tokens_in_use: int,
        context_length: int,
        *,
        cached_prefix_tokens: int = 0,
        prefix_hit_tokens: int = 0,
    ) -> GenerationLoad:
        """The load of a model whose sequences these slots bound, each with `context_length`
        tokens of context; what the slots do not know is the model's to say."""
        return GenerationLoad(
            active_sequences=self.active,
            queued_sequences=self.waiting,
            max_sequences=self.limit,
            queued_prompt_tokens=self.waiting_tokens,
            context_tokens_in_use=context_tokens_in_use,
            context_tokens_capacity=self.limit * context_length,
            cached_prefix_tokens=cached_prefix_tokens,
            prefix_hit_tokens=prefix_hit_tokens,
        )

    def _busy(self) -> BackendBusyError:
        return BackendBusyError(
            f"all {self.limit} sequence slots are busy and {self.queue} requests already wait"
        )

    def try_acquire(self) -> None:
        with self._lock:
            if self._active < self.limit and not self._waiters:
                self._active += 1
                return
        raise self._busy()

    async def acquire(self, prompt_tokens: int = 0) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._active < self.limit and not self._waiters:
                self._active += 1
                return
            if len(self._waiters) >= self.queue:
                raise self._busy()
            entry = (loop, loop.create_future(), prompt_tokens)
            self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                    raise
            if entry[1].done() and not entry[1].cancelled():
                self.release()  # the slot was handed over as we were cancelled: give it back
            raise

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                loop, future, _ = self._waiters.popleft()  # the slot passes on, still active
                loop.call_soon_threadsafe(self._grant, future)
                return
            self._active -= 1

    def _grant(self, future: asyncio.Future[None]) -> None:
        if future.done():  # cancelled meanwhile: pass the slot on again
            self.release()
        else:
            future.set_result(None)
