"""onnxruntime-genai on the CPU: small decoder LLMs from an ONNX model folder ("generate").

A model is a folder (or a tarball of one) as onnxruntime-genai's model builder writes it:
`genai_config.json`, the decoder ONNX file it names, and the tokenizer (`tokenizer.json`,
`tokenizer_config.json`). The chat template comes from `tokenizer_config.json` (option
`chat_template` overrides it); a model without one serves completion prompts only.

Each sequence is one `og.Generator` on a worker thread of the model (`max_sequences` of them,
option, default 2: a Pi 5 has four cores and one sequence's decode step already uses several);
`max_queued` more requests may wait for a slot, the rest are refused with BackendBusyError.
Generators share the model's weights. Greedy when temperature is 0; otherwise top-k / top-p
sampling seeded by `seed`.

Not continuous batching: onnxruntime-genai 0.18's `Engine` batches only with
`engine.dynamic_batching`, which needs a paged-KV decoder (this CPU graph has GroupQueryAttention
with a contiguous cache); its static scheduler lets a request that arrives while a batch runs
start only when that batch has finished (measured: a request added at step 10 of a 40-token
generation got its first token at step 41). So sequences run side by side, bounded.

Prefix cache (option `prefix_cache`, default 4 generators, 0 off): a finished sequence's
generator is kept with its KV cache; a later prompt that starts with the same tokens (the next
turn of a conversation, a shared system prompt) rewinds it to the common prefix and prefills
only the rest. A generator's KV cache is allocated for its whole length up front, so each is
made `prefix_headroom` (default 512) tokens longer than its request needs, room for a next turn,
never the whole context (a 32k-context model would allocate ~0.8 GB per sequence). The router sends a conversation back to the node that served it (session and
prefix affinity, routing/generation.py), so the cache is where the conversation is.

The model is also an OIP model with the tensor names of Triton's vLLM backend (`text_input`
in, `text_output` out, optional `sampling_parameters` JSON), so a plain ModelInfer generates a
whole completion; streaming goes through `generate`. That path, the slots, the load and the
measured rates are `ThreadedGenerativeModel`'s (textgen.py), shared with llama.cpp; this module
keeps tokenizing, the prefix cache and the onnxruntime-genai generation loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hatswarm_agent.backends.base import (
    BackendError,
    BackendUnavailableError,
)
from hatswarm_agent.backends.generation import (
    CpuModelBackend,
    Emitter,
    GenerationLoad,
    GenerationParams,
    GenerationRequestError,
    ModelFolder,
    Outcome,
    Piece,
    PieceSender,
    Producer,
    Prompt,
    RuntimeTimer,
    SequenceSlots,
    StopMatcher,
    check_messages,
    load_from_folder,
    read_json,
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
    "onnxruntime-genai is not installed: install the agent with its `genai` extra "
    "(pip install 'hatswarm-agent[genai]')"
)
CONFIG_FILE = "genai_config.json"
DEFAULT_MAX_SEQUENCES = 2
DEFAULT_MAX_QUEUED = 4
DEFAULT_PREFIX_CACHE = 4
DEFAULT_PREFIX_HEADROOM = 512
# Tokenize prompts up to this many characters on the event loop (microseconds); longer ones
# on a thread.
INLINE_TOKENIZE_CHARS = 4096


def token_logprob(logits: Any, token: int) -> float:
    """log softmax(logits)[token], computed stably from one step's logits (float32 exp, float64
    sum: 0.4 ms at a 152k vocabulary here, 15x less than all in float64)."""
    row = np.asarray(logits).reshape(-1)
    top = row.max()
    total = np.exp(row - top).sum(dtype=np.float64)
    return float(row[token]) - float(top) - float(np.log(total))


def _import_og() -> Any:
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise BackendUnavailableError(INSTALL_HINT) from exc
    return onnxruntime_genai


def verify_folder(folder: Path) -> dict[str, Any]:
    """genai_config.json, the decoder file it names and the tokenizer must all be there."""
    config = read_json(folder / CONFIG_FILE)
    try:
        decoder = config["model"]["decoder"]
        filename = str(decoder["filename"])
        context_length = int(config["model"]["context_length"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(f"{CONFIG_FILE}: missing or invalid field {exc}") from None
    if not (folder / filename).is_file():
        raise BackendError(f"{CONFIG_FILE} names decoder {filename!r}, which is not in the folder")
    if context_length < 2:
        raise BackendError(f"{CONFIG_FILE}: context_length {context_length} is too small")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").is_file():
        raise BackendError("the model folder has no tokenizer (tokenizer.json)")
    return config


class PrefixCache:
    """Idle generators with their token sequences (KV caches), least recently used first.

    `take` hands out the one sharing the longest prefix with a prompt (under the same search
    options, long enough for the request), leaving at least one prompt token to append; `put`
    keeps a finished one, evicting the oldest beyond `size`. Thread-safe: sequences end on
    worker threads.
    """

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._lock = threading.Lock()
        self._idle: list[tuple[tuple[Any, ...], list[int], Any, int]] = []

    @property
    def tokens(self) -> int:
        """Context tokens the idle generators hold."""
        with self._lock:
            return sum(len(sequence) for _, sequence, _, _ in self._idle)

    def take(self, key: tuple[Any, ...], ids: list[int], needed: int) -> tuple[Any, int] | None:
        """The generator for `ids` and the common prefix length, or None; `needed`: the tokens
        the request may reach (prompt + max tokens), which its KV cache must hold."""
        with self._lock:
            best, best_len = -1, 0
            for i, (k, sequence, _, capacity) in enumerate(self._idle):
                if k != key or capacity < needed:
                    continue
                common = _common_prefix(sequence, ids, len(ids) - 1)
                if common > best_len:
                    best, best_len = i, common
            if best < 0:
                return None
            generator = self._idle.pop(best)[2]
            return generator, best_len

    def put(self, key: tuple[Any, ...], sequence: list[int], generator: Any, capacity: int) -> bool:
        if not self.size:
            return False
        with self._lock:
            self._idle.append((key, sequence, generator, capacity))
            del self._idle[: max(0, len(self._idle) - self.size)]
        return True

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y or n >= limit:
            break
        n += 1
    return n


class GenaiModel(ThreadedGenerativeModel):
    """One onnxruntime-genai model folder, loaded and ready to generate."""

    def __init__(self, og: Any, folder: ModelFolder, options: Mapping[str, str]) -> None:
        self._og = og
        self._folder = folder
        self.config = verify_folder(folder.path)
        self.context_length = int(self.config["model"]["context_length"])
        max_sequences = int_option(options, "max_sequences", DEFAULT_MAX_SEQUENCES, minimum=1)
        super().__init__(
            SequenceSlots(
                max_sequences, int_option(options, "max_queued", DEFAULT_MAX_QUEUED, minimum=0)
            )
        )
        self._executor = ThreadPoolExecutor(
            max_workers=max_sequences, thread_name_prefix=f"genai-{folder.path.name}"
        )
        self._chat_template = options.get("chat_template") or None
        tokenizer_config = folder.path / "tokenizer_config.json"
        self.has_chat_template = self._chat_template is not None or (
            tokenizer_config.is_file() and bool(read_json(tokenizer_config).get("chat_template"))
        )
        self._prefixes = PrefixCache(int_option(options, "prefix_cache", DEFAULT_PREFIX_CACHE))
        self._headroom = int_option(options, "prefix_headroom", DEFAULT_PREFIX_HEADROOM)
        self._cached_tokens = 0  # prompt tokens served from the prefix cache since load
        try:
            config = og.Config(str(folder.path))
            threads = int_option(options, "intra_op_num_threads", 0)
            if threads:
                session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
                config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
            self._model = og.Model(config)
            self._tokenizer = og.Tokenizer(self._model)
        except RuntimeError as exc:
            self._executor.shutdown(wait=False)
            raise BackendError(f"onnxruntime-genai cannot load the model: {exc}") from exc
        self.eos_token_ids = frozenset(int(t) for t in self._tokenizer.eos_token_ids)
        if bool_option(options, "warm_up", True):
            self._warm_up()

    # -- prompts -----------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The prompt text: a string as is, chat messages through the chat template."""
        if isinstance(prompt, str):
            return prompt
        messages = check_messages(prompt)
        if not self.has_chat_template:
            raise GenerationRequestError(
                "this model has no chat template: send a completion prompt instead"
            )
        try:
            text: str = self._tokenizer.apply_chat_template(
                json.dumps(messages), template_str=self._chat_template, add_generation_prompt=True
            )
        except RuntimeError as exc:
            raise GenerationRequestError(f"cannot apply the chat template: {exc}") from exc
        return text

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text)]

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self.encode(self.render(prompt)))

    def _ids(self, prompt: Prompt) -> list[int]:
        ids = self.encode(self.render(prompt))
        check_prompt_length(len(ids), self.context_length)
        return ids

    async def _prompt_ids(self, prompt: Prompt) -> list[int]:
        text = self.render(prompt)  # a string as is, so `_ids` does not render it again
        if len(text) <= INLINE_TOKENIZE_CHARS:
            return self._ids(text)
        return await asyncio.to_thread(self._ids, text)

    def _max_length(self, prompt_tokens: int, params: GenerationParams) -> int:
        if params.max_tokens is None:
            return self.context_length
        return min(self.context_length, prompt_tokens + params.max_tokens)

    # -- generation ----------------------------------------------------------------------------

    def _search_options(self, prompt_tokens: int, params: GenerationParams) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_length": self._max_length(prompt_tokens, params),
            "batch_size": 1,
            "num_beams": 1,
            "do_sample": not params.greedy,
        }
        if not params.greedy:
            vocab = int(self.config["model"].get("vocab_size", 0)) or 1 << 20
            options.update(
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k or vocab,
            )
        if params.seed is not None:
            options["random_seed"] = params.seed
        return options

    def _producer(self, ids: list[int], params: GenerationParams) -> Producer:
        og = self._og

        search_options = self._search_options(len(ids), params)
        needed = self._max_length(len(ids), params)
        limit = needed - len(ids)  # tokens this request may generate
        if self._prefixes.size:  # room for a next turn on this generator's KV cache
            search_options["max_length"] = min(self.context_length, needed + self._headroom)
        capacity = int(search_options["max_length"])
        key = tuple(
            sorted(
                (k, v) for k, v in search_options.items() if k not in ("random_seed", "max_length")
            )
        )

        def produce(emit: Emitter, cancelled: threading.Event) -> Outcome:
            clock = time.perf_counter
            started = clock()
            timer = RuntimeTimer()
            # A seeded request samples from a fresh generator (its random stream starts there).
            seeded = "random_seed" in search_options
            reused = None if seeded else self._prefixes.take(key, ids, needed)
            try:
                if reused is not None:
                    generator, common = reused
                    generator.rewind_to(common)
                    generator.append_tokens(np.asarray(ids[common:], dtype=np.int32))
                    self._cached_tokens += common
                else:
                    search = og.GeneratorParams(self._model)
                    search.set_search_options(**search_options)
                    generator = og.Generator(self._model, search)
                    generator.append_tokens(np.asarray(ids, dtype=np.int32))
            except RuntimeError as exc:
                raise BackendError(f"onnxruntime-genai: {exc}") from exc
            timer.spent = clock() - started
            stream = self._tokenizer.create_stream()
            matcher = StopMatcher(params.stop)
            pending: list[int] = []
            judged = params.logprobs  # the first tokens only: what a router judges
            logprob: float | None = 0.0 if judged else None
            count, last = 0, -1
            sender = PieceSender(emit)
            send = sender.send
            stops = bool(params.stop)  # without any, the text is the decoder's as it comes
            printed = False
            self._add_in_use(len(ids))
            counted = 0  # generated tokens added to the in-use count (every IN_USE_EVERY)
            kept = False
            # The runtime's calls, looked up once: a tiny model's token is ~50-120 us here.
            next_token, next_tokens = generator.generate_next_token, generator.get_next_tokens
            is_done, decode, stopping = generator.is_done, stream.decode, cancelled.is_set
            every = IN_USE_EVERY
            try:
                step = clock()  # the runtime's time includes its is_done (a bare loop's too)
                while count < limit and not is_done() and not stopping():
                    # The logits the next token is drawn from: read before the step (after it
                    # they are already the following token's).
                    logits = generator.get_logits() if count < judged else None
                    next_token()
                    last = int(next_tokens()[0])
                    decoded = decode(last)
                    now = clock()
                    timer.spent += now - step
                    if logits is not None and logprob is not None:
                        logprob += token_logprob(logits, last)
                    count += 1
                    if count - counted >= every:
                        self._add_in_use(count - counted)
                        counted = count
                    text = matcher.feed(decoded) if stops else decoded
                    if text:
                        if pending:
                            pending.append(last)
                            piece = (text, len(pending), tuple(pending), logprob)
                            pending = []
                        else:  # the common case: this token's own text
                            piece = (text, 1, (last,), logprob)
                        if not printed:
                            timer.first_piece(count)
                            printed = True
                        send(piece, now)
                        if judged:
                            logprob = 0.0 if count < judged else None
                    else:
                        pending.append(last)  # bytes the decoder holds until they are text
                    if stops and matcher.stopped:
                        break
                    step = clock()
                else:
                    timer.spent += clock() - step
                if self._prefixes.size and not generator.is_done():
                    sequence = [int(t) for t in generator.get_sequence(0)]
                    kept = self._prefixes.put(key, sequence, generator, capacity)
            except RuntimeError as exc:
                raise BackendError(f"onnxruntime-genai: {exc}") from exc
            finally:
                sender.flush()  # before the tail and the end, an error's too
                self._add_in_use(-len(ids) - counted)
                if not kept:
                    del generator
            tail = "" if matcher.stopped else matcher.flush()
            if tail or pending:
                emit(Piece(tail, len(pending), tuple(pending), logprob if pending else None))
            self._measure(count, time.perf_counter() - started)
            stopped = matcher.stopped or last in self.eos_token_ids or cancelled.is_set()
            return Outcome("stop" if stopped else "length", count, timings=timer.timings(count))

        return produce

    def _warm_up(self) -> None:
        """One short greedy generation, so the first request does not pay for lazy setup."""
        ids = self.encode("hello") or [int(self.config["model"].get("bos_token_id", 0))]
        self._warm_up_with(ids)
        self._prefixes.clear()

    # -- load and lifecycle -------------------------------------------------------------------

    def load(self) -> GenerationLoad:
        return self._slots.load(
            max(0, self._in_use),
            self.context_length,
            cached_prefix_tokens=self._prefixes.tokens,
            prefix_hit_tokens=self._cached_tokens,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._prefixes.clear()
        with contextlib.suppress(AttributeError):
            del self._tokenizer, self._model
        self._folder.cleanup()


class GenaiBackend(CpuModelBackend[GenaiModel | ProcessModel | ProcessGroup]):
    """Loads onnxruntime-genai model folders on the CPU."""

    name = "onnxruntime-genai"

    def __init__(self) -> None:
        super().__init__()
        self._og = _import_og()

    def load(
        self, path: Path, options: Mapping[str, str]
    ) -> GenaiModel | ProcessModel | ProcessGroup:
        """Options: max_sequences, max_queued, prefix_cache, prefix_headroom,
        intra_op_num_threads, chat_template, warm_up,
        isolation (process, the default: the model runs in a child process, see
        isolation.py, or in `processes` of them, see processgroup.py; thread: in this
        process, for tests and tools)."""
        isolation = options.get("isolation", "process")
        if isolation == "process":
            return self._track(isolated(__name__, type(self).__name__, path, options))
        if isolation != "thread":
            raise BackendError(f"option isolation must be process or thread, got {isolation!r}")
        return self._track(
            load_from_folder(path, CONFIG_FILE, lambda f: GenaiModel(self._og, f, options))
        )
