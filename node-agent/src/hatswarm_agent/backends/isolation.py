"""A generative model served from a child process, so its runtime never holds the agent's GIL.

onnxruntime-genai's Python binding keeps the GIL for a whole `generate_next_token` (measured
with 0.18: a thread that wanted to run every 0.5 ms ran once per 37 ms decode step; the binding
has no `gil_scoped_release`), and HailoRT's `LLMGeneratorCompletion.read` is bound the same
way. On a worker thread such a model would stall the agent's event loop — every gRPC and HTTP
request, for every model — for one decode step at a time. So by default a generative model
lives in its own process (`multiprocessing` spawn) that loads it with the same backend in
thread mode, and the agent talks to it over a pipe: the pieces of text (sent from the
producer's thread as they come; while the agent has not read the last message and tokens come
fast, the next ones wait and go together, see `_Forward`), the generation's outcome, and the
model's load (sequences and tokens) with every start and end, and on pieces every 0.1 s while
generations run. The parent reads everything in the pipe at once and hands it to the event
loop in one callback.

The child enforces the model's sequence slots, so BackendBusyError, ContextLengthError and
the other request errors come back as themselves. If the child dies, pending and later
requests fail with a BackendError that says so; the lifecycle can unload and load again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import multiprocessing
import pickle
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from hatswarm_agent.backends.base import Array, BackendError, LoadedModel, TensorSpec
from hatswarm_agent.backends.generation import (
    GenerationLoad,
    GenerationParams,
    Outcome,
    Piece,
    PieceTuple,
    Prompt,
    TokenStream,
)
from hatswarm_agent.backends.textgen import ThreadedGenerativeModel

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 1e-4
START_TIMEOUT_S = 300.0  # a 0.5B model loads in seconds; a cold SD card can be slow
CLOSE_TIMEOUT_S = 10.0
LOAD_EVERY_S = 0.1  # during a generation, the model's load rides on a piece this often
# While several sequences run, their producers take turns on the GIL: at 0.1 ms they would
# hand it over after every decode step (4 tiny-model sequences ran at half the rate of one).
SHARED_SWITCH_INTERVAL_S = 0.002
READ_BATCH = 256  # messages the parent reads from the pipe before handing them to the loop


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a BackendError describing it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return BackendError(f"{type(exc).__name__}: {exc}")
    return exc


WirePiece = PieceTuple


def _wire(piece: Piece) -> WirePiece:
    """A piece as a plain tuple: pickles several times faster than the dataclass."""
    return (piece.text, piece.tokens, piece.token_ids, piece.logprob)


def _plain(prompt: Prompt) -> str | list[dict[str, str]]:
    return prompt if isinstance(prompt, str) else [dict(m) for m in prompt]


# -- the child ---------------------------------------------------------------------------------


class _Forward:
    """Sends one generation's pieces down the pipe as the producer emits them, from its thread:
    no hop through the child's event loop per token (which, holding the GIL against the
    producer, halved a fast model's rate). A fast model's pieces come in bundles (`many`: the
    producer's PieceSender makes them, tokenstream.py), a slow one's one a call. Pieces emitted
    before "started" has gone are held and sent right after it, so the parent never sees a
    piece of a generation it has not started. `end` sends the end when the producer has ended
    (from its thread, before the loop hears of it)."""

    def __init__(
        self,
        rid: int,
        send: Callable[[tuple[Any, ...]], None],
        load: Callable[[], Any],
    ) -> None:
        self._rid = rid
        self._send = send
        self._load = load
        self._lock = threading.Lock()
        self._started = False
        self._waiting: list[WirePiece] = []  # until "started" has gone
        self._reported = time.monotonic()
        self._end: tuple[Any, ...] | None = None  # "done" or "error", once the producer ended

    def __call__(self, piece: Piece) -> None:
        self.many([_wire(piece)])

    def many(self, pieces: list[WirePiece]) -> None:
        """A bundle the producer made (PieceSender), or one piece: sent as it is, after
        "started" (held with the rest until then)."""
        with self._lock:
            if not self._started:
                self._waiting.extend(pieces)
                return
            if self._waiting:
                pieces, self._waiting = self._waiting + pieces, []
        self.pieces(pieces)

    def open(self, prompt_tokens: int) -> None:
        """Send "started", then what waits (and the end, if the producer has ended)."""
        with self._lock:
            self._send(("started", self._rid, prompt_tokens, self._load()))
            self._started = True
            self._flush()
            if self._end is not None:
                self._send(self._end)

    def flush(self) -> None:
        """Send the pieces that wait (before the generation's end)."""
        with self._lock:
            self._flush()

    def end(self, outcome: Outcome | BaseException) -> None:
        """The producer has ended and freed its slot: send what waits and "done" (or "error")
        with the load, from the producer's thread (held until "started" has gone)."""
        with self._lock:
            self._end = (
                ("done", self._rid, outcome, self._load())
                if isinstance(outcome, Outcome)
                else ("error", self._rid, _portable(outcome), self._load())
            )
            if self._started:
                self._flush()
                self._send(self._end)

    def _flush(self) -> None:
        pieces, self._waiting = self._waiting, []
        if pieces:
            self.pieces(pieces)

    def pieces(self, pieces: list[WirePiece]) -> None:
        now = time.monotonic()
        if now - self._reported >= LOAD_EVERY_S:  # KV use grows with every token
            self._reported = now
            self._send(("pieces", self._rid, pieces, self._load()))
        else:
            self._send(("pieces", self._rid, pieces))


def serve(conn: Connection, module: str, factory: str, path: str, options: dict[str, str]) -> None:
    """The child process: load the model in thread mode and serve the parent until closed.

    The runtime holds the GIL for a whole decode step, so the child's own loop (which reads
    requests, starts generations and sends "started" and the ends, and the pieces of a model
    that does not forward them from its producer) would get it back only after Python's 5 ms
    switch interval: the first token would be late. A 0.1 ms interval hands it over after each
    step; while several sequences run, SHARED_SWITCH_INTERVAL_S (a new request's first token
    then waits up to that long for the loop, not 5 ms).
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    asyncio.run(_serve(conn, module, factory, path, options))


async def _serve(
    conn: Connection, module: str, factory: str, path: str, options: dict[str, str]
) -> None:
    loop = asyncio.get_running_loop()
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    try:
        backend = getattr(importlib.import_module(module), factory)()
        model = backend.load(Path(path), {**options, "isolation": "thread"})
    except BaseException as exc:
        send(("failed", _portable(exc)))
        return
    send(
        (
            "loaded",
            {
                "capabilities": frozenset(model.capabilities),
                "context_length": model.context_length,
                "inputs": list(model.inputs),
                "outputs": list(model.outputs),
                "load": model.load(),
            },
        )
    )
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def read() -> None:
        """Every message in the pipe, read on the loop (no reader thread to hand over from:
        one thread wake-up less on the way to a first token)."""
        try:
            while True:
                inbox.put_nowait(conn.recv())
                if not conn.poll():
                    return
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("close",))

    loop.add_reader(conn.fileno(), read)
    streams: dict[int, TokenStream] = {}
    cancelled: set[int] = set()
    tasks: set[asyncio.Task[None]] = set()

    running = 0

    def pace(change: int) -> None:
        """A short GIL switch interval while one sequence runs, a longer one while several do."""
        nonlocal running
        running += change
        sys.setswitchinterval(SWITCH_INTERVAL_S if running <= 1 else SHARED_SWITCH_INTERVAL_S)

    async def generate(rid: int, prompt: Prompt, params: GenerationParams) -> None:
        pace(1)
        try:
            await _generate(rid, prompt, params)
        finally:
            pace(-1)

    async def _generate(rid: int, prompt: Prompt, params: GenerationParams) -> None:
        forward = _Forward(rid, send, model.load)
        forwarded = isinstance(model, ThreadedGenerativeModel)
        try:
            if forwarded:
                stream = await model.generate(prompt, params, forward)
            else:
                stream = await model.generate(prompt, params)
        except Exception as exc:
            send(("error", rid, _portable(exc), model.load()))
            return
        streams[rid] = stream
        forward.open(stream.prompt_tokens)
        if forwarded:  # the producer's thread sends the pieces and the end (_Forward.end)
            try:
                if rid in cancelled:
                    await stream.aclose()
                with contextlib.suppress(Exception):  # the end has gone to the parent
                    async for _ in stream:
                        pass
            finally:
                streams.pop(rid, None)
                cancelled.discard(rid)
            return
        try:
            if rid in cancelled:
                await stream.aclose()
            async for piece in stream:  # a model that does not forward its pieces itself
                forward.pieces([_wire(piece), *map(_wire, stream.ready())])
            # A cancel ends the iteration at once, while the producer may still be running:
            # wait until it has freed its slot, so the load sent with "done" is true.
            await stream.aclose()
            outcome = Outcome(
                stream.finish_reason or "stop",
                stream.completion_tokens,
                stream.prompt_tokens,
                stream.timings,
            )
            forward.flush()
            send(("done", rid, outcome, model.load()))
        except Exception as exc:
            forward.flush()
            send(("error", rid, _portable(exc), model.load()))
        finally:
            streams.pop(rid, None)
            cancelled.discard(rid)

    async def call(rid: int, fn: Any, *args: Any) -> None:
        try:
            result = await asyncio.to_thread(fn, *args)
        except Exception as exc:
            send(("error", rid, _portable(exc), None))
        else:
            send(("result", rid, result))

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    while True:
        message = await inbox.get()
        kind = message[0]
        if kind == "generate":
            spawn(generate(*message[1:]))
        elif kind == "cancel":
            rid = message[1]
            if rid in streams:
                spawn(streams[rid].aclose())
            else:
                cancelled.add(rid)  # not started yet: close it as soon as it starts
        elif kind == "count":
            spawn(call(message[1], model.count_tokens, message[2]))
        elif kind == "run":
            spawn(call(message[1], model.run, message[2]))
        elif kind == "close":
            for stream in list(streams.values()):
                await stream.aclose()
            await asyncio.to_thread(backend.close)
            return


# -- the parent --------------------------------------------------------------------------------


def _run_actions(actions: list[tuple[Any, ...]]) -> None:
    for fn, *args in actions:
        fn(*args)


class _Generation:
    """A generate request in flight, as the parent's reader thread sees it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.started: asyncio.Future[int] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.stream: TokenStream | None = None


class ProcessModel(LoadedModel):
    """A generative model in a child process, with the same interface as the model itself."""

    max_batch_size = 0

    def __init__(self, module: str, factory: str, path: Path, options: Mapping[str, str]) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded agent
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=serve,
            args=(child, module, factory, str(path), dict(options)),
            name=f"hatswarm-genai-{path.name}",
            daemon=True,
        )
        self._process.start()
        child.close()
        if not self._conn.poll(START_TIMEOUT_S):
            self._kill()
            raise BackendError(f"the generation worker did not load {path.name} in time")
        try:
            kind, info = self._conn.recv()
        except (EOFError, OSError):
            self._kill()
            raise BackendError("the generation worker died while loading the model") from None
        if kind == "failed":
            self._kill()
            raise info
        self.capabilities: frozenset[str] = info["capabilities"]
        self.context_length: int = info["context_length"]
        self.inputs: list[TensorSpec] = info["inputs"]
        self.outputs: list[TensorSpec] = info["outputs"]
        self._load: GenerationLoad = info["load"]
        self._ids = itertools.count(1)
        self._pending: dict[int, _Generation | Future[Any]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._dead = False
        self._reader = threading.Thread(target=self._read, name="genai-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def in_flight(self) -> int:
        """Requests sent to the child and not answered yet (generations until their end)."""
        return len(self._pending)

    # -- messages ---------------------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._dead:
            raise BackendError("the generation worker process died: reload the model")
        try:
            with self._lock:
                self._conn.send(message)
        except (OSError, ValueError) as exc:
            raise BackendError(f"the generation worker is gone: {exc}") from exc

    def _read(self) -> None:
        """Read the child's messages; everything already in the pipe is read at once and
        handed to the loop in one callback (not one loop wake-up per message)."""
        alive = True
        while alive:
            batch: list[tuple[Any, ...]] = []
            try:
                batch.append(self._conn.recv())
                while len(batch) < READ_BATCH and self._conn.poll():
                    batch.append(self._conn.recv())
            except (EOFError, OSError):
                alive = False
            calls: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
            for message in batch:
                self._dispatch(message, calls)
            for loop, actions in calls.items():
                with contextlib.suppress(RuntimeError):  # the loop may be closed
                    loop.call_soon_threadsafe(_run_actions, actions)
        self._dead = True
        died = BackendError("the generation worker process died: reload the model")
        for rid in list(self._pending):
            self._fail(rid, died)

    def _dispatch(
        self,
        message: tuple[Any, ...],
        calls: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]],
    ) -> None:
        """Act on one message: blocking calls' futures at once, generations' steps queued in
        `calls` for their loop."""
        kind, rid = message[0], message[1]
        pending = self._pending.get(rid)
        if len(message) > 3 and message[3] is not None and kind != "result":
            self._load = message[3]  # started, pieces, done and error may carry the load
        if pending is None:
            return
        if isinstance(pending, Future):
            self._pending.pop(rid, None)
            if kind == "result":
                pending.set_result(message[2])
            else:
                pending.set_exception(message[2])
            return
        actions = calls.setdefault(pending.loop, [])
        if kind == "started":
            actions.append((self._started, rid, pending, message[2]))
        elif kind == "pieces":
            actions.append((self._push, pending, [Piece(*p) for p in message[2]]))
        elif kind in ("done", "error"):
            self._pending.pop(rid, None)
            actions.append((self._end, pending, message[2]))

    def _fail(self, rid: int, exc: BaseException) -> None:
        pending = self._pending.pop(rid, None)
        if isinstance(pending, Future):
            pending.set_exception(exc)
        elif pending is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed
                pending.loop.call_soon_threadsafe(self._end, pending, exc)

    def _started(self, rid: int, generation: _Generation, prompt_tokens: int) -> None:
        generation.stream = TokenStream(
            prompt_tokens,
            cancel=lambda: self._cancel(rid),
            finished=generation.finished,
        )
        if not generation.started.done():
            generation.started.set_result(prompt_tokens)

    @staticmethod
    def _push(generation: _Generation, pieces: list[Piece]) -> None:
        if generation.stream is not None:
            generation.stream.push_many(pieces)

    @staticmethod
    def _end(generation: _Generation, item: Outcome | BaseException) -> None:
        if generation.stream is None:  # failed before its first token
            if not generation.started.done():
                exc = item if isinstance(item, BaseException) else BackendError("no stream")
                generation.started.set_exception(exc)
        else:
            generation.stream.push(item)
        if not generation.finished.done():
            generation.finished.set_result(None)

    def _cancel(self, rid: int) -> None:
        with contextlib.suppress(BackendError):
            self._send(("cancel", rid))

    def _call(self, kind: str, argument: Any) -> Any:
        """A blocking request/response to the child (count_tokens, run)."""
        rid = next(self._ids)
        future: Future[Any] = Future()
        self._pending[rid] = future
        try:
            self._send((kind, rid, argument))
        except BackendError:
            self._pending.pop(rid, None)
            raise
        return future.result()

    # -- the model interface --------------------------------------------------------------------

    async def generate(self, prompt: Prompt, params: GenerationParams) -> TokenStream:
        if self._closed:
            raise BackendError("model is unloaded")
        params.validate()
        rid = next(self._ids)
        generation = _Generation(asyncio.get_running_loop())
        self._pending[rid] = generation
        try:
            self._send(("generate", rid, _plain(prompt), params))
        except BackendError:
            self._pending.pop(rid, None)
            raise
        try:
            await generation.started
        except asyncio.CancelledError:
            self._cancel(rid)
            raise
        assert generation.stream is not None
        return generation.stream

    def count_tokens(self, prompt: Prompt) -> int:
        return int(self._call("count", _plain(prompt)))

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        result: dict[str, Array] = self._call("run", dict(inputs))
        return result

    def load(self) -> GenerationLoad:
        """The model's load as of the child's last start or end of a generation."""
        return self._load

    def capacity_fps(self) -> float:
        return 0.0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(BackendError):
            self._send(("close",))
        self._process.join(CLOSE_TIMEOUT_S)
        self._kill()
        self._reader.join(CLOSE_TIMEOUT_S)

    def _kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join(CLOSE_TIMEOUT_S)
        with contextlib.suppress(OSError):
            self._conn.close()
