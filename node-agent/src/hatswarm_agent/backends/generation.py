"""What generative and embedding backends share: parameters, streams of token pieces, limits.

A generative model (capability "generate") turns a prompt or chat messages into a stream of
text pieces; an embedding model (capability "embed") turns texts into vectors. The runtimes
(onnxruntime-genai, HailoRT GenAI, an encoder under onnxruntime) are blocking C++ calls, so
every generation runs on a worker thread of its model and hands pieces to the event loop
through `TokenStream`; the loop never blocks on a token.

Load is counted in sequences and tokens, not requests: `SequenceSlots` bounds how many
sequences a model runs at once (and how many may wait), and refuses the rest with
`BackendBusyError`, which the serving layer answers as RESOURCE_EXHAUSTED (like its
QueueFullError), so a router can send the request to a peer.

Token counts are the runtime's tokens, never chunks of text: a streamer holds back bytes that
are not yet valid UTF-8, so several tokens can arrive as one piece, or as none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from hatswarm_agent.backends.base import BackendError, DeviceInfo, LoadedModel

_M = TypeVar("_M", bound=LoadedModel)

log = logging.getLogger(__name__)

GENERATE = "generate"
EMBED = "embed"

FinishReason = Literal["stop", "length"]
Message = Mapping[str, str]  # {"role": "user", "content": "..."}
Prompt = str | Sequence[Message]

MAX_STOP_SEQUENCES = 16


class BackendBusyError(BackendError):
    """Every sequence slot of a model is taken and its wait queue is full (RESOURCE_EXHAUSTED)."""


class GenerationRequestError(BackendError):
    """The request cannot be served as asked (INVALID_ARGUMENT): bad parameters, no chat
    template, a prompt longer than the context."""


class ContextLengthError(GenerationRequestError):
    """The prompt does not fit the model's context; a router may escalate it to the cloud."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"the prompt has {prompt_tokens} tokens but the model's context is "
            f"{context_length} tokens (and at least one must be left to generate)"
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length

    def __reduce__(self) -> tuple[Any, ...]:  # crosses the pipe from a generation worker
        return (type(self), (self.prompt_tokens, self.context_length))


# -- parameters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters; greedy decoding when temperature is 0."""

    max_tokens: int | None = None  # None: until EOS or the end of the context
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self) -> GenerationParams:
        """Self, or GenerationRequestError naming the first invalid field."""
        if self.max_tokens is not None and self.max_tokens < 1:
            raise GenerationRequestError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not (math.isfinite(self.temperature) and 0.0 <= self.temperature <= 2.0):
            raise GenerationRequestError(f"temperature must be in [0, 2], got {self.temperature}")
        if not (math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise GenerationRequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise GenerationRequestError(f"top_k must be >= 0, got {self.top_k}")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise GenerationRequestError(f"seed must be in [0, 2^32), got {self.seed}")
        if len(self.stop) > MAX_STOP_SEQUENCES or any(not s for s in self.stop):
            raise GenerationRequestError(
                f"stop takes up to {MAX_STOP_SEQUENCES} non-empty strings, got {list(self.stop)}"
            )
        return self

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> GenerationParams:
        """Parameters as OpenAI, Ollama `options` and Triton's vLLM `sampling_parameters` name
        them (max_tokens / num_predict / max_new_tokens, stop as a string or a list)."""
        max_tokens = _first(raw, "max_tokens", "max_completion_tokens", "num_predict")
        max_tokens = _first(raw, "max_new_tokens") if max_tokens is None else max_tokens
        stop = raw.get("stop") or ()
        try:
            params = cls(
                max_tokens=None if max_tokens in (None, -1) else int(max_tokens),
                temperature=float(_default(raw.get("temperature"), 1.0)),
                top_p=float(_default(raw.get("top_p"), 1.0)),
                top_k=max(0, int(_default(raw.get("top_k"), 0))),  # vLLM's "off" is -1
                seed=None if raw.get("seed") is None else int(raw["seed"]),
                stop=(stop,) if isinstance(stop, str) else tuple(str(s) for s in stop),
            )
        except (TypeError, ValueError) as exc:
            raise GenerationRequestError(f"invalid sampling parameters: {exc}") from None
        return params.validate()

    @classmethod
    def from_json(cls, raw: str | bytes) -> GenerationParams:
        """`from_mapping` of a JSON object (Triton's `sampling_parameters` tensor)."""
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise GenerationRequestError(f"sampling parameters are not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise GenerationRequestError("sampling parameters must be a JSON object")
        return cls.from_mapping(doc)


def _first(raw: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if raw.get(key) is not None:
            return raw[key]
    return None


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def check_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Chat messages as plain dicts of strings, or GenerationRequestError."""
    if isinstance(messages, str | bytes) or not messages:
        raise GenerationRequestError("messages must be a non-empty list of {role, content}")
    checked = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role or not isinstance(content, str):
            raise GenerationRequestError(
                f"message {i} must have a string role and a string content, got {dict(message)}"
            )
        checked.append({"role": role, "content": content})
    return checked


# -- text --------------------------------------------------------------------------------------


class StopMatcher:
    """Cuts streamed text at the first stop sequence, holding back a tail that may start one.

    `feed` returns the text that is safe to emit now; once a stop sequence is seen, `stopped`
    is true and the stop sequence and everything after it are dropped (OpenAI's behaviour).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self._stops:
            return text
        buffer = self._held + text
        first = self._first_hit(buffer)
        # Where a stop may still begin: the buffer's tail is a proper prefix of it. A hit after
        # that point is not yet decided (the earlier stop may complete with the next text).
        pending = min(
            (
                j
                for stop in self._stops
                for j in range(max(0, len(buffer) - len(stop) + 1), len(buffer))
                if stop.startswith(buffer[j:])
            ),
            default=len(buffer),
        )
        if first is not None and first <= pending:
            self.stopped = True
            self._held = ""
            return buffer[:first]
        self._held = buffer[pending:]
        return buffer[:pending]

    def flush(self) -> str:
        """The held-back tail at the end of a generation: cut at a stop sequence it holds
        (then `stopped` is true), else all of it."""
        held, self._held = self._held, ""
        first = self._first_hit(held)
        if first is not None:
            self.stopped = True
            return held[:first]
        return held

    def _first_hit(self, buffer: str) -> int | None:
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        return min(hits) if hits else None


# -- streams -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Text that became printable, and how many tokens it completes (0 for a flushed tail)."""

    text: str
    tokens: int
    token_ids: tuple[int, ...] = ()  # when the runtime shows them (onnxruntime-genai does)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Emitter = Callable[[Piece], None]
"""What a blocking generation loop calls for each piece (from its worker thread)."""


@dataclass
class Outcome:
    """How a blocking generation loop ended."""

    finish_reason: FinishReason
    completion_tokens: int
    prompt_tokens: int | None = None  # when only known at the end (HailoRT chat prompts)


Producer = Callable[[Emitter, threading.Event], Outcome]
"""A blocking generation loop: emits pieces until done or until the event is set."""


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
        self._queue: asyncio.Queue[Piece | Outcome | BaseException] = asyncio.Queue()
        self._cancel = cancel
        self._done = False
        self._finished = finished  # done once the producer has ended and freed its slot
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None
        self.first_token_s: float | None = None  # seconds from start to the first piece
        self._started = time.perf_counter()

    def push(self, item: Piece | Outcome | BaseException) -> None:
        """Hand the consumer a piece, or the end (an Outcome or an error). On the loop."""
        self._queue.put_nowait(item)

    @classmethod
    def start(
        cls,
        producer: Producer,
        executor: Executor,
        prompt_tokens: int,
        on_done: Callable[[], None],
    ) -> TokenStream:
        """Run `producer(emit, cancelled)` on `executor`; `on_done` runs on the loop when it
        has ended, before the stream ends or `aclose` returns."""
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        stream = cls(prompt_tokens, cancel=cancelled.set)

        def emit(piece: Piece) -> None:
            if not cancelled.is_set():
                loop.call_soon_threadsafe(stream.push, piece)

        def finish(outcome: Outcome | BaseException) -> None:
            on_done()  # before the consumer can see the end: its slot is free by then
            stream.push(outcome)

        def run() -> None:
            try:
                outcome: Outcome | BaseException = producer(emit, cancelled)
            except BaseException as exc:
                outcome = exc
            loop.call_soon_threadsafe(finish, outcome)

        stream._finished = asyncio.wrap_future(executor.submit(run), loop=loop)
        return stream

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> Piece:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, Piece):
            if self.first_token_s is None and item.tokens:
                self.first_token_s = time.perf_counter() - self._started
            self.completion_tokens += item.tokens
            return item
        self._done = True
        if isinstance(item, BaseException):
            raise item
        self.finish_reason = item.finish_reason
        self.completion_tokens = item.completion_tokens
        if item.prompt_tokens is not None:
            self.prompt_tokens = item.prompt_tokens
        raise StopAsyncIteration

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


# -- limits ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationLoad:
    """A generative model's load, in sequences and tokens, for routing and NodeStatus."""

    active_sequences: int
    queued_sequences: int
    max_sequences: int
    queued_prompt_tokens: int
    context_tokens_in_use: int  # prompt + generated tokens the active sequences hold (KV cache)
    context_tokens_capacity: int  # max_sequences x context length


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


# -- model folders -----------------------------------------------------------------------------


@dataclass
class ModelFolder:
    """A model folder on disk; `cleanup` removes it when it was unpacked from a tarball."""

    path: Path
    unpacked: bool = False
    _removed: bool = field(default=False, repr=False)

    def cleanup(self) -> None:
        if self.unpacked and not self._removed:
            self._removed = True
            shutil.rmtree(self.path, ignore_errors=True)


def open_model_folder(path: Path, marker: str) -> ModelFolder:
    """The folder holding `marker` (e.g. genai_config.json): `path` itself, or a tarball
    (.tar, .tar.gz, ...: the form a single verified artifact takes) unpacked into a private
    temporary folder, with the marker at its root or in its only top-level folder."""
    if path.is_dir():
        if not (path / marker).is_file():
            raise BackendError(f"model folder {path} has no {marker}")
        return ModelFolder(path)
    if not path.is_file():
        raise BackendError(f"model path {path} does not exist")
    if not tarfile.is_tarfile(path):
        raise BackendError(f"{path.name}: expected a model folder or a tarball of one")
    target = Path(tempfile.mkdtemp(prefix="hatswarm-model-"))
    try:
        with tarfile.open(path) as archive:
            archive.extractall(target, filter="data")  # refuses absolute paths, .., devices
        roots = [target, *(p for p in target.iterdir() if p.is_dir())]
        for root in roots:
            if (root / marker).is_file():
                if root != target:
                    for child in list(root.iterdir()):
                        child.rename(target / child.name)
                    root.rmdir()
                return ModelFolder(target, unpacked=True)
        raise BackendError(f"tarball {path.name} holds no {marker}")
    except BaseException as exc:
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, tarfile.TarError | OSError):
            raise BackendError(f"cannot unpack {path.name}: {exc}") from exc
        raise


def read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path.name}: {exc}") from exc
    if not isinstance(doc, dict):
        raise BackendError(f"{path.name} is not a JSON object")
    return doc


def load_from_folder(path: Path, marker: str, build: Callable[[ModelFolder], _M]) -> _M:
    """`build` a model from the folder holding `marker`; an unpacked tarball is removed again
    when building fails."""
    folder = open_model_folder(path, marker)
    try:
        return build(folder)
    except BaseException:
        folder.cleanup()
        raise


class CpuModelBackend(Generic[_M]):
    """What the CPU model-folder backends share: the models they loaded, closed together."""

    def __init__(self) -> None:
        self._models: list[_M] = []

    def _track(self, model: _M) -> _M:
        self._models.append(model)
        return model

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(accelerator="cpu")

    def close(self) -> None:
        for model in self._models:
            model.close()
        self._models.clear()


# -- capabilities ------------------------------------------------------------------------------


@runtime_checkable
class GenerativeModel(Protocol):
    """A loaded model with the "generate" capability."""

    capabilities: frozenset[str]
    context_length: int

    async def generate(self, prompt: Prompt, params: GenerationParams) -> TokenStream:
        """Start a generation: waits for a sequence slot (BackendBusyError when the queue is
        full too), checks the prompt (GenerationRequestError, ContextLengthError) and returns
        the stream of pieces. Errors before the first token are raised here, not in the
        stream."""
        ...

    def count_tokens(self, prompt: Prompt) -> int:
        """Prompt tokens as the model counts them (chat template applied). Blocking."""
        ...

    def load(self) -> GenerationLoad: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Embeddings:
    vectors: npt.NDArray[np.float32]  # [n, dim]
    prompt_tokens: int


@runtime_checkable
class EmbeddingModel(Protocol):
    """A loaded model with the "embed" capability."""

    capabilities: frozenset[str]
    dimensions: int

    async def embed(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> Embeddings:
        """One vector per text (or per list of token ids), off the event loop."""
        ...

    def close(self) -> None: ...


async def run_blocking(executor: Executor, fn: Callable[[], Any]) -> Any:
    """`fn()` on `executor`, awaited from the loop."""
    return await asyncio.get_running_loop().run_in_executor(executor, fn)
