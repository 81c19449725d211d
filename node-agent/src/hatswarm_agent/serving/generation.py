"""Generations and embeddings on this node, protocol-neutral: what every front door calls.

A generation is a stream of text pieces (backends/generation.py), not one answer, so it does not
fit the data plane's ModelInfer path: the front doors (the gRPC servicer's ModelStreamInfer, the
OpenAI and Ollama HTTP doors) call one `generate(call, context)` instead and iterate what it
returns, a `PieceStream`. Here that stream comes from a model on this node; the router
(routing/generation.py) returns the same kind of stream for a generation running on a peer.
Either way the stream says which node answered, and ends with its finish reason and token usage.

Every generation on this node is counted where ModelInfer requests are (the model's success and
failure counters, its request duration) plus tokens and time to first token.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hatswarm_agent.backends.base import Array
from hatswarm_agent.backends.generation import (
    EMBED,
    GENERATE,
    EmbeddingModel,
    Embeddings,
    FinishReason,
    GenerationLoad,
    GenerationParams,
    GenerativeModel,
    Piece,
    Prompt,
    Timings,
    TokenStream,
    Usage,
)
from hatswarm_agent.protocol.auth import Metadata
from hatswarm_agent.protocol.wire import ROUTE_LOCAL, TEXT_INPUT
from hatswarm_agent.serving.errors import (
    AgentError,
    InvalidInputError,
    NotGenerativeError,
    status_for,
)
from hatswarm_agent.serving.metrics import EDGE, AgentMetrics, TokenCounts
from hatswarm_agent.serving.registry import ModelRegistry, ModelVersion


@dataclass(frozen=True)
class GenerationCall:
    """One generation request, whichever door it came through."""

    model: str
    version: str
    prompt: Prompt  # a completion prompt, or chat messages
    params: GenerationParams
    session: str = ""  # a conversation's id, when the client names one (routing affinity)


class PieceStream(Protocol):
    """A generation in progress: pieces, then `finish_reason` and `usage`; `aclose` always."""

    @property
    def node(self) -> str:
        """The node generating it."""
        ...

    @property
    def route(self) -> str:
        """wire.ROUTE_LOCAL, ROUTE_PEER or ROUTE_CLOUD (also when a peer sent it there)."""
        ...

    @property
    def finish_reason(self) -> FinishReason | None: ...

    @property
    def usage(self) -> Usage: ...

    @property
    def timings(self) -> Timings | None:
        """The runtime's own time, once ended, where the node that ran it measured it."""
        ...

    def __aiter__(self) -> AsyncIterator[Piece]: ...

    async def aclose(self) -> None: ...


class CallContext:
    """What the request path reads of a gRPC call context, for callers that are not gRPC calls
    (the HTTP doors): the call's metadata and the time it has left."""

    def __init__(self, metadata: Metadata = (), timeout_s: float | None = None) -> None:
        self._metadata = metadata
        self._deadline = time.monotonic() + timeout_s if timeout_s is not None else math.inf

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def time_remaining(self) -> float | None:
        if self._deadline == math.inf:
            return None
        return max(0.0, self._deadline - time.monotonic())


def ready_pieces(stream: PieceStream) -> list[Piece]:
    """The pieces of `stream` that have arrived and not been read yet, without waiting ([] for
    a stream that cannot tell). A front door that is behind its model (a small model on a busy
    node makes tokens faster than one HTTP chunk each can be written and parsed) sends them with
    the piece it has just read, as one chunk: vLLM's stream interval, but adaptive, so a slow
    model still streams one chunk per token and the first token is never held back."""
    ready = getattr(stream, "ready", None)
    return list(ready()) if ready is not None else []


# The front doors' entry points: the router's, or this node's own when nothing routes.
Generate = Callable[[GenerationCall, Any], Awaitable[PieceStream]]


def is_generative(entry: ModelVersion) -> bool:
    return GENERATE in getattr(entry.model, "capabilities", ())


def is_embedding(entry: ModelVersion) -> bool:
    return EMBED in getattr(entry.model, "capabilities", ())


class LocalStream:
    """A generation on this node: the backend's TokenStream, counted as it ends."""

    route = ROUTE_LOCAL

    def __init__(
        self,
        stream: TokenStream,
        entry: ModelVersion,
        node: str,
        started: float,
        tokens: TokenCounts | None = None,
    ) -> None:
        self._stream = stream
        self._tokens = tokens
        self._entry = entry
        self._started = started
        self._ended = False
        self._tokens_seen = 0  # tokens of this stream counted in entry.generation so far
        self._closing: asyncio.Future[None] | None = None
        self.node = node

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._stream.finish_reason

    @property
    def usage(self) -> Usage:
        return self._stream.usage

    @property
    def timings(self) -> Timings | None:
        return self._stream.timings

    @property
    def first_token_s(self) -> float | None:
        return self._stream.first_token_s

    @property
    def depth(self) -> int:
        """Sequences the model runs or queues now (what a forwarding agent balances on)."""
        load = self.load
        return load.active_sequences + load.queued_sequences if load else 0

    @property
    def load(self) -> GenerationLoad | None:
        """The model's load in sequences and tokens now (what a forwarding agent scores)."""
        model = self._entry.model
        return model.load() if isinstance(model, GenerativeModel) else None

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> Piece:
        first = self._stream.first_token_s is None
        try:
            piece = await self._stream.__anext__()
        except StopAsyncIteration:
            self._end(None)
            raise
        except Exception as exc:
            self._end(exc)
            raise
        self._entry.generation.tokens(piece.tokens)
        self._tokens_seen += piece.tokens
        if first and self._stream.first_token_s is not None:
            ttft = time.perf_counter() - self._started
            self._entry.generation.first_token(ttft)
            m = self._entry.metrics
            if m is not None:
                m.first_token.observe(ttft)
        return piece

    def ready(self) -> list[Piece]:
        """The pieces that have arrived and not been read yet, without waiting (see
        `ready_pieces`)."""
        pieces = self._stream.ready()
        if pieces:
            tokens = sum(p.tokens for p in pieces)
            self._entry.generation.tokens(tokens)
            self._tokens_seen += tokens
        return pieces

    async def aclose(self) -> None:
        """Stop the generation and count it. Shielded: a front door closes its stream while its
        own task is being cancelled (aiohttp cancels a handler whose client went away, often
        just after a write to that client failed), and a second cancellation must not skip the
        count of the tokens the model made."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await self._stream.aclose()
        if not self._ended:  # the caller went away before the end
            self._end(_CancelledError())

    def _end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        entry, m = self._entry, self._entry.metrics
        usage = self._stream.usage
        entry.generation.prompt_tokens += usage.prompt_tokens
        entry.generation.tokens(max(0, usage.completion_tokens - self._tokens_seen))
        if m is not None:
            m.prompt_tokens.inc(usage.prompt_tokens)
            m.generated_tokens.inc(usage.completion_tokens)
        if self._tokens is not None:
            self._tokens.add(entry.name, EDGE, usage.prompt_tokens, usage.completion_tokens)
        # The time the sequence held the model is its compute time: the operator splits a
        # node's cost over its models by compute seconds (FinOps per token).
        elapsed = time.perf_counter() - self._started
        entry.stats.compute_seconds += elapsed
        if m is not None:
            m.compute_seconds.inc(elapsed)
        if error is None:
            entry.stats.record_success(elapsed)
            entry.stats.inferences += 1
            if m is not None:
                m.success.inc()
                m.request_duration.observe(elapsed)
                m.inferences.inc()
            return
        entry.stats.failure += 1
        if m is not None:
            m.failure("cancelled" if isinstance(error, _CancelledError) else status_for(error)[2])


class _CancelledError(Exception):
    """The consumer closed the stream before its end."""


def _failed(entry: ModelVersion, exc: BaseException) -> None:
    entry.stats.failure += 1
    if entry.metrics is not None:
        entry.metrics.failure(status_for(exc)[2])


async def complete_prompts(
    entry: ModelVersion,
    prompts: Array,
    params: GenerationParams,
    exclude_input: bool,
    tokens: TokenCounts | None,
) -> Array:
    """ModelInfer of a generative model on this node: one whole completion per `text_input`
    element (prompt first unless `exclude_input`), each generated as a stream is, so it is
    counted as one (tokens, time to first token, success) and waits for a sequence slot."""
    model = entry.model
    assert isinstance(model, GenerativeModel)
    outputs = np.empty(prompts.shape, dtype=object)
    for index, value in np.ndenumerate(prompts):
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise InvalidInputError(f"input '{TEXT_INPUT}' is not UTF-8 text") from None
        started = time.perf_counter()
        try:
            stream = await model.generate(text, params)
        except Exception as exc:
            _failed(entry, exc)
            raise
        local = LocalStream(stream, entry, "", started, tokens)
        try:
            completion = "".join([piece.text async for piece in local])
        finally:
            await local.aclose()
        outputs[index] = (completion if exclude_input else text + completion).encode("utf-8")
    return outputs


class Generations:
    """Generations and embeddings on this node's models."""

    def __init__(self, registry: ModelRegistry, metrics: AgentMetrics, node: str) -> None:
        self.registry = registry
        self.metrics = metrics
        self.node = node

    def generative(self, model: str, version: str = "") -> tuple[ModelVersion, GenerativeModel]:
        """The READY version and its model; NOT_FOUND / UNAVAILABLE / INVALID_ARGUMENT."""
        entry = self.registry.get(model, version)
        if not is_generative(entry):
            raise NotGenerativeError(
                f"model '{model}' does not generate text (backend {entry.backend}): "
                "send it tensors with ModelInfer"
            )
        assert isinstance(entry.model, GenerativeModel)
        return entry, entry.model

    def local_entry(self, model: str, version: str = "") -> ModelVersion | None:
        """This node's READY generative version of `model`, None when it has none."""
        try:
            entry = self.registry.get(model, version)
        except AgentError:
            return None
        return entry if is_generative(entry) else None

    def local_embedding(self, model: str, version: str = "") -> ModelVersion | None:
        """This node's READY embedding version of `model`, None when it has none."""
        try:
            entry = self.registry.get(model, version)
        except AgentError:
            return None
        return entry if is_embedding(entry) else None

    @staticmethod
    def has_free_slot(entry: ModelVersion) -> bool:
        """Whether a generation would start at once here (no wait for a sequence slot)."""
        model = entry.model
        if not isinstance(model, GenerativeModel):
            return False
        load = model.load()
        return load.active_sequences + load.queued_sequences < load.max_sequences

    async def start(self, call: GenerationCall, entry: ModelVersion | None = None) -> LocalStream:
        """Start `call` on this node; errors before the first token raise here."""
        started = time.perf_counter()
        if entry is None:
            try:
                entry, model = self.generative(call.model, call.version)
            except AgentError as exc:
                self.metrics.failure_without_model(exc.reason)
                raise
        else:
            model = entry.model  # type: ignore[assignment]
            assert isinstance(model, GenerativeModel)
        try:
            stream = await model.generate(call.prompt, call.params)
        except Exception as exc:
            _failed(entry, exc)
            raise
        return LocalStream(stream, entry, self.node, started, self.metrics.tokens)

    async def generate(self, call: GenerationCall, context: Any) -> PieceStream:
        """The front doors' `generate` when nothing routes: every generation runs here."""
        return await self.start(call)

    async def embed(
        self, model: str, version: str, inputs: Sequence[str] | Sequence[Sequence[int]]
    ) -> tuple[ModelVersion, Embeddings]:
        """Vectors from this node's embedding model (texts or token ids)."""
        entry = self.registry.get(model, version)
        if not is_embedding(entry):
            raise NotGenerativeError(
                f"model '{model}' does not embed text (backend {entry.backend})"
            )
        assert isinstance(entry.model, EmbeddingModel)
        started = time.perf_counter()
        try:
            result = await entry.model.embed(inputs)
        except Exception as exc:
            entry.stats.failure += 1
            if entry.metrics is not None:
                entry.metrics.failure(status_for(exc)[2])
            raise
        elapsed = time.perf_counter() - started
        entry.stats.record_success(elapsed)
        entry.stats.inferences += len(inputs)
        m = entry.metrics
        if m is not None:
            m.success.inc()
            m.request_duration.observe(elapsed)
            m.inferences.inc(len(inputs))
            m.prompt_tokens.inc(result.prompt_tokens)
        self.metrics.tokens.add(entry.name, EDGE, result.prompt_tokens, 0)
        return entry, result
