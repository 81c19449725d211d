"""What the generative backends share, so each keeps only what its runtime does differently.

The OIP face of every generative model (llamacpp.py, genai.py, hailo_genai.py): the tensor names
of Triton's vLLM backend (`text_input` in, `text_output` out; `sampling_parameters` JSON, `stream`
and `exclude_input_in_output` optional, as that backend declares them), so tritonclient code
written for it works unchanged, and `run_prompts`, the blocking `run` of the backend interface
that generates one whole completion per prompt. The agent's ModelInfer does not call `run`: it
generates through `generate` as the streaming doors do (serving/generation.complete_prompts), so
its tokens are counted the same way. `check_prompt_length` is the one check of a prompt's token
count against the context.

`ThreadedGenerativeModel` is the base of the CPU models whose sequences are blocking producers on
worker threads of the model, bounded by `SequenceSlots` (llama.cpp, onnxruntime-genai): starting
a stream in a slot, the OIP path, the context tokens in use, the measured decode rate and the
warm-up. Each subclass tokenizes, produces and closes in its own way. The Hailo-10H model is not
one of them: its sequences are LLM objects on the device, which template chat prompts and count
their own tokens, so it shares only the OIP face and the load (`SequenceSlots.load`).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor

import numpy as np

from hatswarm_agent.backends.base import Array, BackendError, LoadedModel, TensorSpec
from hatswarm_agent.backends.genparams import (
    GENERATE,
    ContextLengthError,
    GenerationParams,
    GenerationRequestError,
    Prompt,
)
from hatswarm_agent.backends.sequences import GenerationLoad, SequenceSlots
from hatswarm_agent.backends.tokenstream import (
    Forwarder,
    Producer,
    TokenStream,
    drain_blocking,
)

# Triton's vLLM backend tensor names, so tritonclient code written for it works unchanged.
TEXT_INPUT = TensorSpec("text_input", "BYTES", (1,))
TEXT_OUTPUT = TensorSpec("text_output", "BYTES", (-1,))
SAMPLING_PARAMETERS = "sampling_parameters"
# Every input of a generative model's OIP face, as the vLLM backend declares them: the prompt,
# then the optional sampling parameters (a JSON object), `stream` (ModelInfer refuses true:
# streaming is ModelStreamInfer's) and `exclude_input_in_output`.
GENERATION_INPUTS = (
    TEXT_INPUT,
    TensorSpec(SAMPLING_PARAMETERS, "BYTES", (1,), optional=True),
    TensorSpec("stream", "BOOL", (1,), optional=True),
    TensorSpec("exclude_input_in_output", "BOOL", (1,), optional=True),
)

# Weight of the newest generation in the measured rates (EWMA).
RATE_ALPHA = 0.2


def check_prompt_length(tokens: int, context_length: int) -> None:
    """A prompt must have a token and leave room in the context for one more."""
    if not tokens:
        raise GenerationRequestError("the prompt is empty")
    if tokens >= context_length:
        raise ContextLengthError(tokens, context_length)


def run_prompts(
    inputs: Mapping[str, Array], complete: Callable[[str, GenerationParams], str]
) -> dict[str, Array]:
    """ModelInfer with vLLM-style tensors: `complete(text, params)` (blocking) once per
    `text_input` element, each answer the `text_output` element in its place."""
    if TEXT_INPUT.name not in inputs:
        raise GenerationRequestError(f"input {TEXT_INPUT.name} (BYTES) is required")
    prompts = np.asarray(inputs[TEXT_INPUT.name], dtype=object)
    params = GenerationParams()
    if SAMPLING_PARAMETERS in inputs:
        raw = np.asarray(inputs[SAMPLING_PARAMETERS], dtype=object).reshape(-1)
        params = GenerationParams.from_json(raw[0] if raw.size else b"{}")
    outputs = np.empty(prompts.shape, dtype=object)
    for index, value in np.ndenumerate(prompts):
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        outputs[index] = complete(text, params).encode("utf-8")
    return {TEXT_OUTPUT.name: outputs}


def _ewma(current: float, sample: float) -> float:
    return (1 - RATE_ALPHA) * current + RATE_ALPHA * sample if current else sample


# Generated tokens between a producer's updates of the in-use (KV) count: a lock each, and a
# fast model makes thousands of tokens a second.
IN_USE_EVERY = 16


class ThreadedGenerativeModel(LoadedModel):
    """A CPU generative model whose sequences run as producers on `_executor`'s threads, at
    most `_slots.limit` at once. A subclass sets `context_length` and `_executor`, calls
    `__init__` with its slots before it can fail or warm up, and implements `_ids` (a prompt's
    checked token ids), `_producer` and `close`."""

    capabilities = frozenset({GENERATE})
    max_batch_size = 0
    context_length: int
    _executor: Executor

    def __init__(self, slots: SequenceSlots) -> None:
        self.inputs = list(GENERATION_INPUTS)
        self.outputs = [TEXT_OUTPUT]
        self._slots = slots
        self._in_use = 0  # context tokens the running sequences hold
        self._in_use_lock = threading.Lock()
        self._tokens_per_s = 0.0
        self._sequences_per_s = 0.0
        self._closed = False

    @abc.abstractmethod
    def _ids(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids, checked with `check_prompt_length`. Blocking."""

    async def _prompt_ids(self, prompt: Prompt) -> list[int]:
        """`_ids` for `generate`, on the event loop unless a subclass says otherwise."""
        return self._ids(prompt)

    @abc.abstractmethod
    def _producer(self, ids: list[int], params: GenerationParams) -> Producer:
        """The blocking loop that generates after `ids` (a slot is held while it runs)."""

    # -- generation ----------------------------------------------------------------------------

    async def generate(
        self, prompt: Prompt, params: GenerationParams, forward: Forwarder | None = None
    ) -> TokenStream:
        """Stream a completion; see GenerativeModel.generate. `forward`: see TokenStream.start."""
        if self._closed:
            raise BackendError("model is unloaded")
        params.validate()
        ids = await self._prompt_ids(prompt)
        await self._slots.acquire(len(ids))
        try:
            return TokenStream.start(
                self._producer(ids, params),
                self._executor,
                len(ids),
                self._slots.release,
                forward,
            )
        except BaseException:
            self._slots.release()
            raise

    def _add_in_use(self, tokens: int) -> None:
        with self._in_use_lock:
            self._in_use += tokens

    def _measure(self, tokens: int, seconds: float) -> None:
        if tokens < 2 or seconds <= 0:
            return
        self._tokens_per_s = _ewma(self._tokens_per_s, tokens / seconds)
        self._sequences_per_s = _ewma(self._sequences_per_s, self._slots.limit / seconds)

    def _warm_up_with(self, ids: list[int], runs: int = 1) -> None:
        """`runs` short greedy generations after `ids`, so no request pays for lazy setup; the
        rates they measured are forgotten."""
        params = GenerationParams(max_tokens=2, temperature=0.0)
        try:
            for _ in range(runs):
                drain_blocking(self._producer(ids[: self.context_length - 2], params))
        except BackendError as exc:
            raise BackendError(f"the model does not run: {exc}") from exc
        self._tokens_per_s = self._sequences_per_s = 0.0

    # -- the OIP (non-streaming) path -----------------------------------------------------------

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """ModelInfer with vLLM-style tensors: one whole completion per `text_input` element.
        Blocking; called from a worker thread."""
        if self._closed:
            raise BackendError("model is unloaded")
        return run_prompts(inputs, self._complete)

    def _complete(self, text: str, params: GenerationParams) -> str:
        ids = self._ids(text)
        self._slots.try_acquire()
        try:
            completion, _ = drain_blocking(self._producer(ids, params.validate()))
        finally:
            self._slots.release()
        return completion

    # -- load ------------------------------------------------------------------------------------

    def load(self) -> GenerationLoad:
        return self._slots.load(max(0, self._in_use), self.context_length)

    def tokens_per_s(self) -> float:
        """Measured decode rate of one sequence (EWMA), 0 before the first generation."""
        return self._tokens_per_s

    def capacity_fps(self) -> float:
        """Whole sequences per second this model has completed at its concurrency (EWMA)."""
        return self._sequences_per_s
