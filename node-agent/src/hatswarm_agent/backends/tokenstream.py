"""Streams of token pieces: what a blocking generation loop emits, and the async iterator the event
loop reads them from.

The runtimes are blocking C++ calls, so every generation runs on a worker thread of its model
(or in a child process, isolation.py) and hands pieces to the event loop through `TokenStream`;
the loop never blocks on a token. Token counts are the runtime's tokens, never chunks of text: a
streamer holds back bytes that are not yet valid UTF-8, so several tokens can arrive as one
piece, or as none."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hatswarm_agent.backends.genparams import FinishReason


@dataclass(frozen=True)
class Piece:
    """Text that became printable, and how many tokens it completes (0 for a flushed tail)."""

    text: str
    tokens: int
    token_ids: tuple[int, ...] = ()  # when the runtime shows them (onnxruntime-genai does)
    # Sum of the natural-log probabilities of its tokens under the model's distribution, when
    # asked for (GenerationParams.logprobs) and the runtime exposes logits; else None.
    logprob: float | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Emitter = Callable[[Piece], None]
"""What a blocking generation loop calls for each piece (from its worker thread)."""

PieceTuple = tuple[str, int, tuple[int, ...], float | None]
"""A piece as a plain tuple (text, tokens, token_ids, logprob): what a process host's pipe
carries, and what a fast producer hands over in bundles (`BundlingEmitter`)."""

# PieceSender holds a piece that came less than FAST_TOKEN_S a token after the piece before it
# (a model past 500 tokens/s) for a BundlingEmitter, until its oldest held piece is BUNDLE_S old:
# a fast model's pieces go a bundle at a time, a slower model's one by one, the first at once.
# Each bundle is a pipe message that wakes the agent's process, and on these two cores it cost
# the producer's process more than the message itself: the tiny model's producer took, over its
# runtime's own time, 1.074 in-process with 5 ms bundles, 1.058 at 10 ms, 1.044 at 20 ms and 1.023
# with no pipe.
# 20 ms is a display frame and a bit: a reader sees text flow, not bursts.
FAST_TOKEN_S = 0.002
BUNDLE_S = 0.020


@runtime_checkable
class BundlingEmitter(Protocol):
    """An emitter that also takes several pieces at once as tuples (a process host's forwarder):
    a producer that makes thousands of tokens a second skips a Piece and a call per token
    (~3 us of a ~45-75 us tiny-model token here)."""

    def __call__(self, piece: Piece) -> None: ...

    def many(self, pieces: list[PieceTuple]) -> None: ...


class PieceSender:
    """How a producer hands over its pieces: one Piece a call to a plain emitter (a thread
    host's), and to a bundling one (a process host's forwarder) a fast model's pieces in
    bundles: a piece that came under FAST_TOKEN_S a token after the one before waits until the
    oldest waiting is BUNDLE_S old. The first piece and a slow model's go at once. `flush` when the
    producer stops, before its tail. Every runtime's producer sends through one of these, so
    the pipe to the agent carries the same bundles whichever runtime made them."""

    __slots__ = ("_emit", "_held", "_last", "_many", "_since")

    def __init__(self, emit: Emitter) -> None:
        self._emit = emit
        self._many = emit.many if isinstance(emit, BundlingEmitter) else None
        self._held: list[PieceTuple] = []
        self._since = self._last = -math.inf

    def send(self, piece: PieceTuple, now: float) -> None:
        """`piece` became ready at `now` (the producer's perf_counter reading)."""
        many = self._many
        if many is None:
            self._emit(Piece(*piece))
            return
        if not self._held:
            self._since = now
        self._held.append(piece)
        # Slow: more than FAST_TOKEN_S a token since the last piece (a piece may span tokens
        # whose bytes were not text yet).
        slow = now - self._last >= FAST_TOKEN_S * max(1, piece[1])
        if slow or now - self._since >= BUNDLE_S:
            held, self._held = self._held, []
            many(held)
        self._last = now

    def flush(self) -> None:
        """Send what waits (the producer has stopped, or failed)."""
        if self._held and self._many is not None:
            held, self._held = self._held, []
            self._many(held)


@dataclass(frozen=True)
class Timings:
    """The runtime's own time for one generation: its calls only, not the agent's work around
    them. A client subtracts it from what it measured to see the agent's overhead, on the very
    request and process that served it (the same prefill runs +-7% faster or slower from one
    process to the next here, more than the overhead itself). What llama.cpp's server reports
    as `timings` and Ollama's as its durations."""

    prompt_s: float  # up to the first piece of text: the prompt's evaluation and first token(s)
    decode_s: float  # the tokens after the first piece
    decode_tokens: int


class RuntimeTimer:
    """Adds up the time a producer spends inside its runtime's calls (two clock reads a token,
    ~0.1 us) and where the first piece came."""

    __slots__ = ("_first", "spent")

    def __init__(self) -> None:
        self.spent = 0.0
        self._first: tuple[float, int] | None = None

    def first_piece(self, tokens: int) -> None:
        """A piece is being emitted after `tokens` tokens: the first one ends the prompt's time."""
        if self._first is None:
            self._first = (self.spent, tokens)

    def timings(self, tokens: int) -> Timings:
        spent, at = self._first if self._first is not None else (self.spent, tokens)
        return Timings(spent, self.spent - spent, tokens - at)


@dataclass
class Outcome:
    """How a blocking generation loop ended."""

    finish_reason: FinishReason
    completion_tokens: int
    prompt_tokens: int | None = None  # when only known at the end (HailoRT chat prompts)
    timings: Timings | None = None  # the runtime's own time, where the backend measures it


Producer = Callable[[Emitter, threading.Event], Outcome]
"""A blocking generation loop: emits pieces until done or until the event is set."""


class Forwarder(Protocol):
    """Where a process host sends a generation from the producer's thread (isolation.py):
    called per piece (or `many` with a bundle), then `end` with the outcome once the producer
    has ended and its slot is free, before the end reaches the loop (one hop less for the last
    tokens)."""

    def __call__(self, piece: Piece) -> None: ...

    def many(self, pieces: list[PieceTuple]) -> None: ...

    def end(self, outcome: Outcome | BaseException) -> None: ...


class _ForwardingEmitter:
    """The emitter a forwarded producer gets: the forwarder's, silent once cancelled."""

    __slots__ = ("_cancelled", "_forward")

    def __init__(self, forward: Forwarder, cancelled: threading.Event) -> None:
        self._forward = forward
        self._cancelled = cancelled

    def __call__(self, piece: Piece) -> None:
        if not self._cancelled.is_set():
            self._forward(piece)

    def many(self, pieces: list[PieceTuple]) -> None:
        if pieces and not self._cancelled.is_set():
            self._forward.many(pieces)


class TokenStream:
    """An async iterator of `Piece`s, fed from a worker thread or a worker process.

    `TokenStream.start` runs a blocking producer on a thread; a process host feeds a stream
    with `push` (on the loop) and ends it with an `Outcome` or an exception. Iterate with
    `async for`; `aclose()` (or leaving an `async with` block) asks the producer to stop at its
    next token and waits until it has. After the last piece, `finish_reason` and `usage` are
    set. An error in the producer is raised by the iteration.
    """

    def __init__(
        self,
        prompt_tokens: int,
        *,
        cancel: Callable[[], None] = lambda: None,
        finished: asyncio.Future[None] | None = None,
    ) -> None:
        self._items: deque[Piece | Outcome | BaseException] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._cancel = cancel
        self._done = False
        self._finished = finished  # done once the producer has ended and freed its slot
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None
        self.first_token_s: float | None = None  # seconds from start to the first piece
        self.timings: Timings | None = None  # the runtime's own time, once ended
        self._started = time.perf_counter()

    def push(self, item: Piece | Outcome | BaseException) -> None:
        """Hand the consumer a piece, or the end (an Outcome or an error). On the loop."""
        self._items.append(item)
        self._wake()

    def push_many(self, items: Iterable[Piece | Outcome | BaseException]) -> None:
        """`push` for several items at once (one wake-up of the consumer). On the loop."""
        self._items.extend(items)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @classmethod
    def start(
        cls,
        producer: Producer,
        executor: Executor,
        prompt_tokens: int,
        on_done: Callable[[], None],
        forward: Forwarder | None = None,
    ) -> TokenStream:
        """Run `producer(emit, cancelled)` on `executor`; `on_done` (thread-safe: it frees the
        sequence's slot) runs on the producer's thread when it has ended, before the stream
        ends or `aclose` returns. With `forward`, pieces and the end go to it on the producer's
        thread instead of through the stream (which then only ends): what a process host sends
        down its pipe without waking its loop for every token."""
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        stream = cls(prompt_tokens, cancel=cancelled.set)
        # Pieces the loop has not taken yet: one wake-up of the loop per batch, not per token
        # (a fast model emits faster than the loop wakes up; a slow one still gets one each).
        outbox: list[Piece] = []
        lock = threading.Lock()

        def deliver() -> None:
            with lock:
                pieces = outbox[:]
                outbox.clear()
            stream.push_many(pieces)

        def emit(piece: Piece) -> None:
            if cancelled.is_set():
                return
            with lock:
                outbox.append(piece)
                if len(outbox) > 1:
                    return  # a delivery is already scheduled and will take this one too
            loop.call_soon_threadsafe(deliver)

        def finish(outcome: Outcome | BaseException) -> None:
            deliver()  # pieces still in the outbox come before the end
            stream.push(outcome)

        sink: Emitter = emit if forward is None else _ForwardingEmitter(forward, cancelled)

        def run() -> None:
            try:
                outcome: Outcome | BaseException = producer(sink, cancelled)
            except BaseException as exc:
                outcome = exc
            try:
                on_done()  # before the consumer can see the end: its slot is free by then
            finally:
                if forward is not None:
                    forward.end(outcome)
                loop.call_soon_threadsafe(finish, outcome)

        stream._finished = asyncio.wrap_future(executor.submit(run), loop=loop)
        return stream

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> Piece:
        if self._done:
            raise StopAsyncIteration
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if isinstance(item, Piece):
            return self._take(item)
        self._done = True
        if isinstance(item, BaseException):
            raise item
        self._end(item)
        raise StopAsyncIteration

    def ready(self) -> list[Piece]:
        """The pieces that have arrived and not been read yet, without waiting (the end, if it
        is among them, stays for the next `__anext__`). A consumer that is behind the model
        sends them on together: one chunk to its client instead of one per token."""
        pieces: list[Piece] = []
        items = self._items
        if self._done:
            return pieces
        while items and isinstance(items[0], Piece):
            pieces.append(self._take(items.popleft()))  # type: ignore[arg-type]
        return pieces

    @property
    def ended(self) -> bool:
        """Whether the end (an Outcome or an error) has arrived, read or not."""
        return self._done or any(not isinstance(item, Piece) for item in self._items)

    def _take(self, piece: Piece) -> Piece:
        if self.first_token_s is None and piece.tokens:
            self.first_token_s = time.perf_counter() - self._started
        self.completion_tokens += piece.tokens
        return piece

    def _end(self, outcome: Outcome) -> None:
        self.finish_reason = outcome.finish_reason
        self.completion_tokens = outcome.completion_tokens
        if outcome.prompt_tokens is not None:
            self.prompt_tokens = outcome.prompt_tokens
        self.timings = outcome.timings

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)

    async def text(self) -> str:
        """Drain the stream: the whole completion (for non-streaming requests)."""
        return "".join([piece.text async for piece in self])

    async def aclose(self) -> None:
        """Stop the producer at its next token and wait until it has ended."""
        if self._finished is not None and not self._finished.done():
            self._cancel()
        self._done = True
        if self._finished is not None:
            with contextlib.suppress(Exception):  # the producer's error has no reader now
                await asyncio.shield(self._finished)

    async def __aenter__(self) -> TokenStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def drain_blocking(producer: Producer) -> tuple[str, Outcome]:
    """Run a producer on the calling thread and collect its text (the OIP `run` path)."""
    parts: list[str] = []

    def emit(piece: Piece) -> None:
        parts.append(piece.text)

    outcome = producer(emit, threading.Event())
    return "".join(parts), outcome
