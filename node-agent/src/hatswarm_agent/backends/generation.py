"""The generative and embedding capabilities, and where their parts live.

A generative model (capability "generate") turns a prompt or chat messages into a stream of
text pieces; an embedding model (capability "embed") turns texts into vectors. The parts:
genparams.py (requests: parameters, messages, stop sequences, request errors), tokenstream.py
(pieces and the async stream the loop reads), sequences.py (load in sequences and tokens, the
bounded slots), modelfolder.py (model folders and tarballs), textgen.py (the OIP text tensors
and the base of the CPU generative models). This module keeps the capability
protocols and re-exports those parts, so `from hatswarm_agent.backends.generation import ...`
keeps working for backends written against it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from hatswarm_agent.backends.genparams import (
    EMBED,
    GENERATE,
    MAX_STOP_SEQUENCES,
    BackendBusyError,
    ContextLengthError,
    FinishReason,
    GenerationParams,
    GenerationRequestError,
    Message,
    Prompt,
    StopMatcher,
    check_messages,
)
from hatswarm_agent.backends.modelfolder import (
    CpuModelBackend,
    ModelFolder,
    load_from_folder,
    open_model_folder,
    read_json,
)
from hatswarm_agent.backends.sequences import GenerationLoad, SequenceSlots
from hatswarm_agent.backends.tokenstream import (
    BUNDLE_S,
    FAST_TOKEN_S,
    BundlingEmitter,
    Emitter,
    Outcome,
    Piece,
    PieceSender,
    PieceTuple,
    Producer,
    RuntimeTimer,
    Timings,
    TokenStream,
    Usage,
    drain_blocking,
)

__all__ = [
    "BUNDLE_S",
    "EMBED",
    "FAST_TOKEN_S",
    "GENERATE",
    "MAX_STOP_SEQUENCES",
    "BackendBusyError",
    "BundlingEmitter",
    "ContextLengthError",
    "CpuModelBackend",
    "EmbeddingModel",
    "Embeddings",
    "Emitter",
    "FinishReason",
    "GenerationLoad",
    "GenerationParams",
    "GenerationRequestError",
    "GenerativeModel",
    "Message",
    "ModelFolder",
    "Outcome",
    "Piece",
    "PieceSender",
    "PieceTuple",
    "Producer",
    "Prompt",
    "RuntimeTimer",
    "SequenceSlots",
    "StopMatcher",
    "Timings",
    "TokenStream",
    "Usage",
    "check_messages",
    "drain_blocking",
    "load_from_folder",
    "open_model_folder",
    "read_json",
    "run_blocking",
]


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
