"""llama.cpp on the CPU: GGUF decoder models through llama-cpp-python ("generate").

A model is one `.gguf` file (verified by sha256 like any artifact). Its chat template comes from
the GGUF metadata (`tokenizer.chat_template`, rendered the way llama-cpp-python renders it:
Jinja2 with the model's BOS/EOS token texts); option `chat_template` overrides it, and a model
without one serves completion prompts only. Prompts are tokenized as llama-cpp-python's own
`create_completion` and `create_chat_completion` do (BOS when the vocabulary asks for it on a
completion prompt, none added to a rendered chat prompt), so the tokens equal the runtime's own.

A llama.cpp context holds one sequence's KV cache, so each sequence slot is one context
(`max_sequences`, option, default 1: one sequence already uses every core; contexts share the
weights, which llama.cpp maps read-only). A context keeps its last sequence's KV cache and
reuses the longest common prefix of the next prompt (llama-cpp-python's prefix match), which is
what prefix-affinity routing pays off on. `max_queued` more requests may wait for a slot.
Greedy when temperature is 0; otherwise top-k / top-p sampling seeded by `seed` (no min-p, no
repeat penalty: OpenAI's parameters mean exactly what they say).

Like the onnxruntime-genai backend, a model runs in a child process by default (isolation.py):
the sampling loop is Python and would otherwise take the agent's GIL between decode steps. What
the two share (slots, streams, the OIP path, the load, the measured rates) is
`ThreadedGenerativeModel`'s (textgen.py); this module keeps tokenizing and llama.cpp's loop.

With option `embedding=true` the file is an embedding model instead ("embed"): llama.cpp's
embedding mode, pooled as the GGUF says (`<arch>.pooling_type`; option `pooling` = mean, cls or
last overrides it; a decoder without one is mean-pooled), L2-normalised unless
`normalize=false`. It runs in the agent's process: one `llama_decode` per batch, during which
ctypes releases the GIL, and no per-token Python loop. Its OIP path and `embed` are
`TextEmbeddingModel`'s (embed.py), shared with the ONNX encoders.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hatswarm_agent.backends.base import (
    BackendError,
    BackendUnavailableError,
    TensorSpec,
)
from hatswarm_agent.backends.embed import PROMPT_TOKENS, TEXT, TextEmbeddingModel
from hatswarm_agent.backends.generation import (
    CpuModelBackend,
    Embeddings,
    Emitter,
    GenerationParams,
    GenerationRequestError,
    Outcome,
    Piece,
    PieceSender,
    Producer,
    Prompt,
    RuntimeTimer,
    SequenceSlots,
    StopMatcher,
    check_messages,
)
from hatswarm_agent.backends.isolation import ProcessModel
from hatswarm_agent.backends.options import bool_option, int_option
from hatswarm_agent.backends.processgroup import ProcessGroup, isolated
from hatswarm_agent.backends.textgen import (
    IN_USE_EVERY,
    ThreadedGenerativeModel,
    check_prompt_length,
)

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "llama-cpp-python is not installed: install the agent with its `gguf` extra "
    "(CMAKE_ARGS=-DGGML_NATIVE=OFF pip install 'hatswarm-agent[gguf]', or `make gguf`)"
)
GGUF_MAGIC = b"GGUF"
DEFAULT_MAX_SEQUENCES = 1
DEFAULT_MAX_QUEUED = 4
# Context tokens when the model was trained for more (the KV cache is allocated per token);
# option context_length sets it, up to what the model was trained for.
DEFAULT_CONTEXT = 4096
DEFAULT_EMBED_CONTEXT = 512  # tokens of one text to embed (longer ones are cut)


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(INSTALL_HINT) from exc
    except OSError as exc:  # the shared library does not load (wrong CPU for the build, ...)
        raise BackendUnavailableError(f"llama.cpp's library does not load: {exc}") from exc
    return llama_cpp


def check_gguf(path: Path) -> None:
    """A readable file that starts with the GGUF magic, else a BackendError saying what it is."""
    if path.is_dir():
        raise BackendError(f"{path.name} is a folder: the llama.cpp backend loads one .gguf file")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise BackendError(f"cannot read {path.name}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise BackendError(
            f"{path.name} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})"
        )


def default_threads(sequences: int) -> int:
    """The cores this process may use, shared among the sequences that run at once."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // sequences)


class LlamaCppModel(ThreadedGenerativeModel):
    """One GGUF model, loaded into `max_sequences` llama.cpp contexts and ready to generate."""

    def __init__(self, llama_cpp: Any, path: Path, options: Mapping[str, str]) -> None:
        check_gguf(path)
        max_sequences = int_option(options, "max_sequences", DEFAULT_MAX_SEQUENCES, minimum=1)
        super().__init__(
            SequenceSlots(
                max_sequences, int_option(options, "max_queued", DEFAULT_MAX_QUEUED, minimum=0)
            )
        )
        threads = int_option(options, "threads", 0) or default_threads(max_sequences)
        requested_context = int_option(options, "context_length", 0)
        self._contexts: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._all: list[Any] = []

        def context(n_ctx: int) -> Any:
            return llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=0,
                verbose=False,
            )

        try:
            n_ctx = requested_context or DEFAULT_CONTEXT
            first = context(n_ctx)
            trained = int(first._model.n_ctx_train())
            if not requested_context and 0 < trained < n_ctx:  # no KV cache it cannot use
                first.close()
                n_ctx = trained
                first = context(n_ctx)
            self._all.append(first)
            self._all.extend(context(n_ctx) for _ in range(max_sequences - 1))
            for llm in self._all:
                self._contexts.put(llm)
        except (ValueError, RuntimeError, OSError) as exc:
            self.close()
            raise BackendError(f"llama.cpp cannot load {path.name}: {exc}") from exc
        first = self._all[0]
        self._llama_cpp = llama_cpp
        self._vocab = first._model.vocab
        self.context_length = int(first.n_ctx())
        self._add_bos = bool(first._model.add_bos_token()) and first.token_bos() != -1
        self._formatter = self._chat_formatter(first, options.get("chat_template") or None)
        self.has_chat_template = self._formatter is not None
        self._executor = ThreadPoolExecutor(
            max_workers=max_sequences, thread_name_prefix=f"llamacpp-{path.stem}"
        )
        if bool_option(options, "warm_up", True):
            self._warm_up()

    @staticmethod
    def _chat_formatter(llm: Any, template: str | None) -> Any:
        """llama-cpp-python's Jinja2 formatter for the GGUF template (or the option's)."""
        template = template or llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def text(token: int) -> str:
            return str(llm._model.token_get_text(token)) if token != -1 else ""

        try:
            return Jinja2ChatFormatter(
                template=template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos())
            )
        except Exception as exc:  # jinja2's TemplateSyntaxError and friends
            raise BackendError(f"the chat template does not parse: {exc}") from exc

    # -- prompts -----------------------------------------------------------------------------

    def encode(self, prompt: Prompt) -> list[int]:
        """Prompt token ids exactly as llama-cpp-python's completion / chat paths make them."""
        llm = self._all[0]
        if isinstance(prompt, str):
            if not prompt:
                raise GenerationRequestError("the prompt is empty")
            bos = [int(llm.token_bos())] if self._add_bos else []
            return bos + list(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        messages = check_messages(prompt)
        if self._formatter is None:
            raise GenerationRequestError(
                "this model has no chat template: send a completion prompt instead"
            )
        try:
            rendered = self._formatter(messages=messages)
        except Exception as exc:  # the template's raise_exception, undefined names, ...
            raise GenerationRequestError(f"cannot apply the chat template: {exc}") from exc
        text = rendered.prompt.encode("utf-8")
        return list(llm.tokenize(text, add_bos=not rendered.added_special, special=True))

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self.encode(prompt))

    def _ids(self, prompt: Prompt) -> list[int]:
        ids = self.encode(prompt)
        check_prompt_length(len(ids), self.context_length)
        return ids

    # -- generation ----------------------------------------------------------------------------

    def _producer(self, ids: list[int], params: GenerationParams) -> Producer:
        is_eog = self._llama_cpp.llama_vocab_is_eog

        def produce(emit: Emitter, cancelled: threading.Event) -> Outcome:
            clock = time.perf_counter
            started = clock()
            timer = RuntimeTimer()
            limit = self.context_length - len(ids)
            budget = limit if params.max_tokens is None else min(params.max_tokens, limit)
            llm = self._contexts.get()  # a slot was acquired, so a context is free
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            matcher = StopMatcher(params.stop)
            pending: list[int] = []
            count, eog = 0, False
            sender = PieceSender(emit)
            stops = bool(params.stop)  # without any, the text is the decoder's as it comes
            counted = 0  # generated tokens added to the in-use count (every IN_USE_EVERY)
            self._add_in_use(len(ids))
            try:
                llm.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
                tokens = llm.generate(
                    ids,
                    top_k=params.top_k,  # 0: no top-k cut, as in llama.cpp
                    top_p=params.top_p,
                    min_p=0.0,
                    typical_p=1.0,
                    temp=params.temperature,
                    repeat_penalty=1.0,
                )
                try:
                    while not cancelled.is_set():
                        step = clock()
                        token = next(tokens, None)  # evaluates the prompt, then one token
                        if token is None or is_eog(self._vocab, token):
                            timer.spent += clock() - step
                            eog = token is not None
                            break
                        decoded = decoder.decode(llm.detokenize([token]))
                        now = clock()
                        timer.spent += now - step
                        count += 1
                        if count - counted >= IN_USE_EVERY:
                            self._add_in_use(count - counted)
                            counted = count
                        pending.append(int(token))
                        text = matcher.feed(decoded) if stops else decoded
                        if text:
                            timer.first_piece(count)
                            sender.send((text, len(pending), tuple(pending), None), now)
                            pending = []
                        if matcher.stopped or count >= budget:
                            break
                finally:
                    tokens.close()
                    sender.flush()  # before the tail and the end, an error's too
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"llama.cpp: {exc}") from exc
            finally:
                self._add_in_use(-len(ids) - counted)
                self._contexts.put(llm)
            tail = "" if matcher.stopped else matcher.feed(decoder.decode(b"", final=True))
            tail += "" if matcher.stopped else matcher.flush()
            if tail or pending:
                emit(Piece(tail, len(pending), tuple(pending)))
            self._measure(count, time.perf_counter() - started)
            stopped = eog or matcher.stopped or cancelled.is_set()
            return Outcome("stop" if stopped else "length", count, timings=timer.timings(count))

        return produce

    def _warm_up(self) -> None:
        """One short greedy generation per context, so no request pays for lazy setup."""
        llm = self._all[0]
        ids = ([int(llm.token_bos())] if self._add_bos else []) + list(
            llm.tokenize(b"hello", add_bos=False)
        )
        self._warm_up_with(ids, runs=len(self._all))

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        for llm in self._all:
            with contextlib.suppress(Exception):
                llm.close()
        self._all.clear()


class LlamaCppEmbedModel(TextEmbeddingModel):
    """One GGUF model in llama.cpp's embedding mode: texts in, one pooled vector each."""

    def __init__(self, llama_cpp: Any, path: Path, options: Mapping[str, str]) -> None:
        check_gguf(path)
        pooling = {
            "": llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,  # the model's own
            "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
            "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
        }
        choice = options.get("pooling", "").lower()
        if choice not in pooling:
            raise BackendError(f"option pooling={choice!r}: expected mean, cls or last")
        threads = int_option(options, "threads", 0) or default_threads(1)
        requested = int_option(options, "context_length", 0)
        n_ctx = requested or DEFAULT_EMBED_CONTEXT

        def context(kind: int) -> Any:
            # A whole text in one micro-batch: encoders attend over the sequence at once.
            return llama_cpp.Llama(
                model_path=str(path), embedding=True, pooling_type=kind, n_ctx=n_ctx,
                n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=0, verbose=False,
            )  # fmt: skip

        try:
            kind = pooling[choice]
            self._llm = context(kind)
            trained = int(self._llm._model.n_ctx_train())
            if self._llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_NONE:
                kind = llama_cpp.LLAMA_POOLING_TYPE_MEAN  # a decoder LLM: no pooling type
            if not requested and 0 < trained < n_ctx:
                n_ctx = trained  # texts longer than the model was trained for are cut
            if kind != pooling[choice] or n_ctx != self._llm.n_ctx():
                self._llm.close()
                self._llm = context(kind)
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"llama.cpp cannot load {path.name}: {exc}") from exc
        self.normalize = bool_option(options, "normalize", True)
        self.dimensions = int(self._llm.n_embd())
        self.context_length = int(self._llm.n_ctx())
        self.inputs = [TEXT]
        self.outputs = [TensorSpec("embedding", "FP32", (-1, self.dimensions)), PROMPT_TOKENS]
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp-embed")
        self._closed = False

    def embed_blocking(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> Embeddings:
        texts = self._texts(inputs)
        if len(texts) != len(inputs):
            raise GenerationRequestError("this model embeds texts, not lists of token ids")
        if any(not t for t in texts):
            raise GenerationRequestError("an input is empty")
        try:
            vectors, tokens = self._llm.embed(
                texts, normalize=self.normalize, truncate=True, return_count=True
            )
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llama.cpp: {exc}") from exc
        return Embeddings(np.asarray(vectors, dtype=np.float32), int(tokens))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        with contextlib.suppress(Exception):
            self._llm.close()


class LlamaCppBackend(
    CpuModelBackend[LlamaCppModel | LlamaCppEmbedModel | ProcessModel | ProcessGroup]
):
    """Loads GGUF files with llama.cpp on the CPU."""

    name = "llamacpp"

    def __init__(self) -> None:
        super().__init__()
        self._llama_cpp = _import_llama_cpp()

    def load(
        self, path: Path, options: Mapping[str, str]
    ) -> LlamaCppModel | LlamaCppEmbedModel | ProcessModel | ProcessGroup:
        """Options: max_sequences, max_queued, threads, context_length, chat_template, warm_up,
        isolation (process, the default: the model runs in a child process, see isolation.py,
        or in `processes` of them, see processgroup.py;
        thread: in this process, for tests and tools); embedding=true (with pooling,
        normalize, threads, context_length): an embedding model, in this process."""
        if bool_option(options, "embedding", False):
            return self._track(LlamaCppEmbedModel(self._llama_cpp, path, options))
        isolation = options.get("isolation", "process")
        if isolation == "process":
            check_gguf(path)  # a clear error before a process is spawned for nothing
            return self._track(isolated(__name__, type(self).__name__, path, options))
        if isolation != "thread":
            raise BackendError(f"option isolation must be process or thread, got {isolation!r}")
        return self._track(LlamaCppModel(self._llama_cpp, path, options))
