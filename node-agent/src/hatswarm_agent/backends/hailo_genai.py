"""Hailo-10H GenAI backend (Raspberry Pi AI HAT+ 2): LLM HEFs through `hailo_platform.genai`.

HailoRT 5.x runs the whole LLM pipeline on the Hailo-10H (tokenizer, prompt template, KV cache
in its on-module memory); the host holds an `LLM(vdevice, hef, lora_name,
optimize_memory_on_device)` and reads generated text piece by piece from the context manager
`LLM.generate(...)`. Like `hailo_platform` itself, the module comes from Hailo's apt packages,
never from PyPI: it is imported lazily and its absence is a clear BackendUnavailableError.

An LLM object is a conversation: it keeps its context (the KV cache in the Hailo-10H's memory)
between calls and HailoRT allows only one generation (one `LLMGeneratorCompletion`) at a time
per object. `max_sequences` (option, default 1) LLM objects of the same HEF run side by side on
the device when its memory allows; `max_queued` requests may wait for one; the rest get
BackendBusyError. Each request takes an idle LLM object, sets the stop tokens (the model's own
plus the request's), generates, and gives the object back.

Conversations reuse the device's context instead of prefilling it again. Each object remembers
the chat it holds after a generation that ended on its own (the messages sent and the answer as
generated). A chat request that continues it (same messages, that answer, then new non-system
messages) goes to that object and sends only the new messages: HailoRT renders a later prompt
of a context as a continuation. Otherwise the object holding nothing or used least recently is
cleared (`clear_context()`) and gets the whole prompt; completion prompts always do. A
generation that was cancelled, failed, stopped on a request's stop sequence or hit its token
limit (HailoRT then appends a recovery sequence) leaves a context nobody can name: cleared next
time. With HailoRT >= 5.1.1 (`save_context`/`load_context`) a conversation about to be cleared
is saved first (up to `prefix_cache` of them, option, default 4, 0 = off, least recently used
dropped) and a follow-up loads it into any idle object whose prompt template has rendered a chat
since its last clear: `load_context` does not reset HailoRT's client-side "first prompt" state,
so an object fresh from `clear_context()` would template the follow-up as a new chat.

Token counts: each piece HailoRT yields is one generated token (it merges a lone U+FFFD into
the next piece, which then stands for two: counted as one, a rare undercount). Prompt tokens
come from `LLM.tokenize` for text prompts; chat prompts are templated on the device, so they
are counted from the context's size after the generation (less the generated tokens and the
recovery sequence HailoRT appends when a generation hits its token limit).

HailoRT before 5.1.1 (read in hailort's bindings/python/src/llm_api.cpp at each tag) has no
`max_context_capacity`, `get_context_usage_size`, `save_context` or `load_context`, and before
5.1.0 `LLM()` takes no `optimize_memory_on_device`. There the context length is option
`context_length`, else DEFAULT_CONTEXT_LENGTH (a prompt past the HEF's real KV cache then fails
on the device with HailoRT's error, so set the option when the HEF's is smaller), and a chat
prompt's tokens are estimated as `count_tokens` does: its messages' text tokenized on the
device plus CHAT_TOKENS_PER_MESSAGE a message. Exact would need the template rendered here
(HailoRT renders it with minja, with its own continuation rules, and the agent has no Jinja
engine), and an estimate keeps usage and the load report meaningful where "unknown" would
read as zero. Text prompts stay exact (`tokenize` exists in every 5.x).

The OIP face (Triton vLLM tensor names, the ModelInfer loop) and the load report are shared with
the CPU generative backends (textgen.py, `SequenceSlots.load`); the rest is not, since the LLM
objects template, count and generate on the device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hatswarm_agent.backends.base import (
    Array,
    BackendError,
    BackendUnavailableError,
    DeviceInfo,
    LoadedModel,
)
from hatswarm_agent.backends.generation import (
    GENERATE,
    Emitter,
    FinishReason,
    GenerationLoad,
    GenerationParams,
    Outcome,
    Piece,
    PieceSender,
    Producer,
    Prompt,
    RuntimeTimer,
    SequenceSlots,
    StopMatcher,
    TokenStream,
    check_messages,
    drain_blocking,
    run_blocking,
)
from hatswarm_agent.backends.options import bool_option, int_option
from hatswarm_agent.backends.textgen import (
    GENERATION_INPUTS,
    TEXT_OUTPUT,
    check_prompt_length,
    run_prompts,
)

log = logging.getLogger(__name__)

ACCELERATOR = "hailo10h"
INSTALL_HINT = (
    "hailo_platform.genai (HailoRT 5.x) is not installed: on Raspberry Pi OS with an AI HAT+ 2 "
    "run `sudo apt install hailo-h10-all` and create the venv with --system-site-packages"
)
DEFAULT_MAX_QUEUED = 4
DEFAULT_PREFIX_CACHE = 4  # saved contexts of conversations (HailoRT >= 5.1.1)
READ_TIMEOUT_MS = 30_000
# ChatML and Llama-style prompts spend about this many template tokens per message: an
# estimate for routing before the device has templated a chat prompt.
CHAT_TOKENS_PER_MESSAGE = 4
# The context length assumed when HailoRT (< 5.1.1) cannot report the HEF's and option
# context_length is unset. An assumption, not read from any HEF (HailoRT keeps the KV-cache
# size in the HEF and has no default): set the option to the HEF's own where it is known.
DEFAULT_CONTEXT_LENGTH = 2048


def find_hef(path: Path, options: Mapping[str, str]) -> Path:
    """The HEF: `path` itself, or the one named by option `hef` (or the only *.hef) in it."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise BackendError(f"model path {path} does not exist")
    if options.get("hef"):
        hef = path / options["hef"]
        if not hef.is_file():
            raise BackendError(f"option hef={options['hef']!r}: no such file in the model folder")
        return hef
    hefs = sorted(path.glob("*.hef"))
    if len(hefs) != 1:
        raise BackendError(f"expected one .hef in {path.name}, found {[p.name for p in hefs]}")
    return hefs[0]


Chat = tuple[tuple[str, str], ...]  # (role, content) of each message


@dataclass(frozen=True)
class _Held:
    """A conversation as a device context holds it: the messages and the generated answer."""

    chat: Chat
    tokens: int  # context tokens (prompt template included)


@dataclass(frozen=True)
class _Plan:
    """How a request uses the LLM object it was given."""

    reuse: _Held | None = None  # the object's context continues this conversation
    load: tuple[_Held, bytes] | None = None  # load this saved context first
    evict: _Held | None = None  # the object's conversation, to save before it is replaced

    @property
    def prefix(self) -> _Held | None:
        return self.reuse or (self.load[0] if self.load else None)


def context_length(llm: Any, options: Mapping[str, str]) -> int:
    """The HEF's KV-cache size as HailoRT >= 5.1.1 reports it, which option `context_length`
    may lower (not raise: the device refuses past it); before 5.1.1 the option, else
    DEFAULT_CONTEXT_LENGTH."""
    requested = int_option(options, "context_length", 0, minimum=0)
    capacity = getattr(llm, "max_context_capacity", None)
    if not callable(capacity):
        return requested or DEFAULT_CONTEXT_LENGTH
    device = int(capacity())
    if requested > device:
        raise BackendError(
            f"option context_length={requested} is over the HEF's context of {device} tokens"
        )
    return requested or device


def estimate_chat(tokenize: Any, messages: Sequence[Mapping[str, str]]) -> int:
    """A chat prompt's tokens without the device's template: the messages' text tokenized,
    plus CHAT_TOKENS_PER_MESSAGE a message and the generation prompt."""
    text = "\n".join(f"{m['role']}\n{m['content']}" for m in messages)
    return len(tokenize(text)) + CHAT_TOKENS_PER_MESSAGE * len(messages) + 3


def continues(held: Chat, chat: Chat) -> bool:
    """`chat` is `held` plus new messages HailoRT accepts on a used context (no system)."""
    n = len(held)
    return len(chat) > n and chat[:n] == held and all(role != "system" for role, _ in chat[n:])


class _Slot:
    """One LLM object and what the backend last told it."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.default_stops: list[str] = list(llm.get_stop_tokens())
        self.stops: list[str] = list(self.default_stops)
        self.in_use = 0  # context tokens of the running generation
        self.busy = False
        self.held: _Held | None = None  # the conversation its context holds, when known
        # Whether its prompt template has rendered a chat since the last clear_context():
        # HailoRT then renders the next chat prompt as a continuation (no system prompt).
        self.continuing = False
        self.last_used = 0


class HailoLLMModel(LoadedModel):
    """One LLM HEF, as `max_sequences` LLM objects on the backend's VDevice."""

    capabilities = frozenset({GENERATE})
    max_batch_size = 0

    def __init__(
        self, backend: HailoGenaiBackend, llms: Sequence[Any], options: Mapping[str, str]
    ) -> None:
        self._backend = backend
        self._error = backend.hailo_error
        self.context_length = context_length(llms[0], options)
        self._all = [_Slot(llm) for llm in llms]
        self._lock = threading.Lock()
        self._uses = 0
        self._can_save = all(
            callable(getattr(llm, "save_context", None))
            and callable(getattr(llm, "load_context", None))
            for llm in llms
        )
        saved_max = int_option(options, "prefix_cache", DEFAULT_PREFIX_CACHE, minimum=0)
        self._saved_max = saved_max if self._can_save else 0
        self._saved: OrderedDict[Chat, tuple[_Held, bytes]] = OrderedDict()  # LRU first
        self._hit_tokens = 0  # prompt tokens not prefilled again since load
        self._slots = SequenceSlots(
            len(llms), int_option(options, "max_queued", DEFAULT_MAX_QUEUED, minimum=0)
        )
        self._executor = ThreadPoolExecutor(max_workers=len(llms), thread_name_prefix="hailo-llm")
        # HailoRT >= 5.1.1 reports a context's size; before, chat prompts are estimated.
        self._reports_usage = all(
            callable(getattr(llm, "get_context_usage_size", None)) for llm in llms
        )
        self.prompt_template = str(llms[0].prompt_template())
        self.inputs = list(GENERATION_INPUTS)
        self.outputs = [TEXT_OUTPUT]
        self._closed = False

    # -- slots of LLM objects ------------------------------------------------------------------

    def _take(self, chat: Chat | None = None) -> tuple[_Slot, _Plan]:
        """An idle LLM object (a held sequence slot guarantees one) and how to use it: the one
        holding the conversation `chat` continues, else a saved context of it loaded into an
        object that can take one, else the object holding nothing or used least recently."""
        with self._lock:
            idle = [slot for slot in self._all if not slot.busy]
            slot, plan = self._choose(idle, chat)
            slot.busy = True
            return slot, plan

    def _choose(self, idle: list[_Slot], chat: Chat | None) -> tuple[_Slot, _Plan]:
        by_age = sorted(idle, key=lambda s: (s.held is not None, s.last_used))
        if chat is not None:
            holding = [s for s in idle if s.held is not None and continues(s.held.chat, chat)]
            if holding:
                best = max(holding, key=lambda s: len(s.held.chat) if s.held else 0)
                return best, _Plan(reuse=best.held)
            saved = [key for key in self._saved if continues(key, chat)]
            takers = [s for s in by_age if s.continuing]
            if saved and takers:
                entry = self._saved.pop(max(saved, key=len))
                return takers[0], _Plan(load=entry, evict=self._evicted(takers[0]))
        return by_age[0], _Plan(evict=self._evicted(by_age[0]))

    def _evicted(self, slot: _Slot) -> _Held | None:
        """The slot's conversation when it is worth saving before it is replaced."""
        if slot.held is None or not self._saved_max or slot.held.chat in self._saved:
            return None
        return slot.held

    def _give_back(self, slot: _Slot, *, used: bool = True) -> None:
        slot.in_use = 0
        with self._lock:
            if used:
                self._uses += 1
                slot.last_used = self._uses
            slot.busy = False
        self._slots.release()

    def _save(self, llm: Any, held: _Held) -> None:
        """Keep the context of `held` (on `llm`) for a later turn; losing it only costs a
        prefill, so a failure to save is logged, not the request's error."""
        try:
            blob = bytes(llm.save_context())
        except self._error as exc:
            log.warning("HailoRT cannot save a conversation's context: %s", exc)
            return
        with self._lock:
            self._saved[held.chat] = (held, blob)
            self._saved.move_to_end(held.chat)
            while len(self._saved) > self._saved_max:
                self._saved.popitem(last=False)

    # -- prompts ---------------------------------------------------------------------------------

    def count_tokens(self, prompt: Prompt) -> int:
        """Exact for text prompts; an estimate for chat messages (templated on the device).
        Blocking; needs an idle LLM object (BackendBusyError when every one is generating)."""
        messages = None if isinstance(prompt, str) else check_messages(prompt)
        self._slots.try_acquire()
        slot = self._take_for_tokenizing()
        try:
            if messages is not None:
                return estimate_chat(slot.llm.tokenize, messages)
            return len(slot.llm.tokenize(prompt))
        except self._error as exc:
            raise BackendError(f"HailoRT: {exc}") from exc
        finally:
            self._give_back(slot, used=False)

    def _take_for_tokenizing(self) -> _Slot:
        """Any idle object: tokenizing leaves its context as it is."""
        with self._lock:
            slot = next(s for s in self._all if not s.busy)
            slot.busy = True
            return slot

    def _prepare(
        self,
        slot: _Slot,
        plan: _Plan,
        prompt: str | list[dict[str, str]],
        params: GenerationParams,
    ) -> int | None:
        """On the worker: the context the plan asks for (the slot's, a saved one loaded, or a
        fresh one), this request's stop tokens, the prompt checked. Returns the prompt's tokens
        when they can be known before generating."""
        llm = slot.llm
        try:
            if plan.evict is not None:
                self._save(llm, plan.evict)
            slot.held = None  # until a generation ends on its own
            if plan.load is not None:
                llm.load_context(plan.load[1])
            elif plan.reuse is None:
                llm.clear_context()
                slot.continuing = False
            stops = slot.default_stops + [s for s in params.stop if s not in slot.default_stops]
            if stops != slot.stops:
                llm.set_stop_tokens(stops)
                slot.stops = stops
            if not isinstance(prompt, str):
                return None
            tokens = len(llm.tokenize(prompt))
        except self._error as exc:
            raise BackendError(f"HailoRT: {exc}") from exc
        check_prompt_length(tokens, self.context_length)
        return tokens

    @staticmethod
    def _generate_kwargs(
        params: GenerationParams, prompt_tokens: int | None, context: int
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"do_sample": not params.greedy}
        if not params.greedy:
            kwargs["temperature"] = params.temperature
            kwargs["top_p"] = params.top_p
            if params.top_k:
                kwargs["top_k"] = params.top_k
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.max_tokens is not None:
            kwargs["max_generated_tokens"] = params.max_tokens
        elif prompt_tokens is not None:
            kwargs["max_generated_tokens"] = context - prompt_tokens
        return kwargs

    # -- generation --------------------------------------------------------------------------------

    async def generate(self, prompt: Prompt, params: GenerationParams) -> TokenStream:
        """Stream a completion; see GenerativeModel.generate."""
        if self._closed:
            raise BackendError("model is unloaded")
        params.validate()
        request: str | list[dict[str, str]] = (
            prompt if isinstance(prompt, str) else check_messages(prompt)
        )
        await self._slots.acquire()
        slot, plan = self._take(_chat(request))
        try:
            prompt_tokens = await run_blocking(
                self._executor, lambda: self._prepare(slot, plan, request, params)
            )
            return TokenStream.start(
                self._producer(slot, plan, request, params, prompt_tokens),
                self._executor,
                prompt_tokens or 0,
                lambda: self._give_back(slot),
            )
        except BaseException:
            self._give_back(slot)
            raise

    def _producer(
        self,
        slot: _Slot,
        plan: _Plan,
        request: str | list[dict[str, str]],
        params: GenerationParams,
        prompt_tokens: int | None,
    ) -> Producer:
        kwargs = self._generate_kwargs(params, prompt_tokens, self.context_length)
        chat = _chat(request)
        prefix = plan.prefix
        # On a continued context only the new messages are sent.
        sent = request[len(prefix.chat) :] if prefix is not None else request

        def produce(emit: Emitter, cancelled: threading.Event) -> Outcome:
            llm = slot.llm
            clock = time.perf_counter
            timer = RuntimeTimer()
            matcher = StopMatcher(params.stop)
            count, pending, status = 0, 0, ""
            sender = PieceSender(emit)
            generated: list[str] = []
            slot.in_use = (prompt_tokens or 0) + (prefix.tokens if prefix is not None else 0)
            try:
                try:
                    step = clock()
                    started = llm.generate(prompt=sent, **kwargs)
                    timer.spent += clock() - step
                except self._error:
                    # HailoRT's template state is unknown now: never load a context into it.
                    slot.continuing = slot.continuing and chat is None
                    raise
                # A chat prompt was templated: the next one is rendered as a continuation.
                slot.continuing = slot.continuing or chat is not None
                if prefix is not None:
                    with self._lock:
                        self._hit_tokens += prefix.tokens
                with started as completion:
                    while _status(completion) == "GENERATING" and not cancelled.is_set():
                        step = clock()
                        text = completion.read(READ_TIMEOUT_MS)
                        now = clock()
                        timer.spent += now - step
                        generated.append(text)
                        count += 1
                        pending += 1
                        slot.in_use += 1
                        out = matcher.feed(text)
                        if out:
                            timer.first_piece(count)
                            sender.send((out, pending, (), None), now)
                            pending = 0
                        if matcher.stopped:
                            break
                    status = _status(completion)
                if prompt_tokens is not None:
                    counted = prompt_tokens
                elif self._reports_usage:
                    # A chat prompt was templated and counted on the device: read it off the
                    # context, less the answer and any recovery sequence.
                    recovery = (
                        len(llm.tokenize(llm.get_generation_recovery_sequence()))
                        if status == "MAX_TOKENS_REACHED"
                        else 0
                    )
                    usage = int(llm.get_context_usage_size())
                    counted = max(0, usage - count - recovery)
                else:
                    assert not isinstance(request, str)
                    counted = estimate_chat(llm.tokenize, request)
            except self._error as exc:
                raise BackendError(f"HailoRT generation failed: {exc}") from exc
            finally:
                sender.flush()  # before the tail and the end, an error's too
            tail = "" if matcher.stopped else matcher.flush()
            if tail or pending:
                emit(Piece(tail, pending))
            finish: FinishReason = (
                "length" if status == "MAX_TOKENS_REACHED" and not matcher.stopped else "stop"
            )
            if (
                chat is not None
                and status == "LOGICAL_END_OF_GENERATION"
                and not matcher.stopped
                and not cancelled.is_set()
            ):
                answer = (("assistant", "".join(generated)),)
                slot.held = _Held(chat + answer, counted + count)
            return Outcome(finish, count, counted, timer.timings(count))

        return produce

    # -- the OIP (non-streaming) path ----------------------------------------------------------

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """ModelInfer with vLLM-style tensors; blocking, called from a worker thread."""
        if self._closed:
            raise BackendError("model is unloaded")
        return run_prompts(inputs, self._complete)

    def _complete(self, text: str, params: GenerationParams) -> str:
        self._slots.try_acquire()
        slot, plan = self._take()
        try:
            tokens = self._prepare(slot, plan, text, params)
            completion, _ = drain_blocking(self._producer(slot, plan, text, params, tokens))
        finally:
            self._give_back(slot)
        return completion

    # -- load and lifecycle ------------------------------------------------------------------------

    def load(self) -> GenerationLoad:
        with self._lock:
            cached = sum(s.held.tokens for s in self._all if s.held is not None and not s.busy)
            cached += sum(held.tokens for held, _ in self._saved.values())
            hits = self._hit_tokens
        return self._slots.load(
            sum(slot.in_use for slot in self._all),
            self.context_length,
            cached_prefix_tokens=cached,
            prefix_hit_tokens=hits,
        )

    def capacity_fps(self) -> float:
        return 0.0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        for slot in self._all:
            with contextlib.suppress(self._error, AttributeError):
                slot.llm.release()
        self._backend.forget(self)


def _chat(request: str | list[dict[str, str]]) -> Chat | None:
    """A chat request as (role, content) pairs; None for a completion prompt."""
    if isinstance(request, str):
        return None
    return tuple((m["role"], m["content"]) for m in request)


def _status(completion: Any) -> str:
    """The completion's status name (the enum lives in HailoRT's C++ binding)."""
    status = completion.generation_status
    return str(getattr(status, "name", status))


class HailoGenaiBackend:
    """Loads LLM HEFs onto the node's Hailo-10H and reports its identity and temperature."""

    name = "hailo-genai"
    accelerator = ACCELERATOR

    def __init__(self, *, multi_process_service: bool = False, group_id: str = "SHARED") -> None:
        try:
            import hailo_platform  # optional: installed system-wide by apt, never from PyPI
            from hailo_platform import genai
        except ImportError as exc:
            raise BackendUnavailableError(INSTALL_HINT) from exc
        self._hp: Any = hailo_platform
        self._genai: Any = genai
        self.hailo_error: type[Exception] = hailo_platform.HailoRTException
        self._models: list[HailoLLMModel] = []
        self._device: Any = None
        params = genai.VDevice.create_params()
        if multi_process_service:
            params.multi_process_service = True
            params.group_id = group_id
        try:
            self._vdevice: Any = genai.VDevice(params)
        except self.hailo_error as exc:
            raise BackendUnavailableError(
                f"no usable Hailo device ({exc}): check `hailortcli scan` and that the "
                "hailo1x_pci driver is loaded"
            ) from exc
        try:
            ids = list(self._vdevice.get_physical_devices_ids())
        except self.hailo_error:
            ids = []
        self.device_id = str(ids[0]) if ids else ""

    def load(self, path: Path, options: Mapping[str, str]) -> HailoLLMModel:
        """Options: max_sequences (LLM objects, default 1), max_queued, prefix_cache (saved
        conversation contexts, default 4), context_length (needed before HailoRT 5.1.1 when
        the HEF's is not DEFAULT_CONTEXT_LENGTH), lora_name, optimize_memory_on_device
        (HailoRT >= 5.1.0), hef (the file in a folder), hw_arch."""
        declared = options.get("hw_arch", "").strip().lower()
        if declared and declared != ACCELERATOR:
            raise BackendError(
                f"this node's NPU is a {ACCELERATOR} (Hailo-10H) but the HEF is compiled for "
                f"{declared}: place it on a matching node"
            )
        hef = find_hef(path, options)
        count = int_option(options, "max_sequences", 1, minimum=1)
        lora = options.get("lora_name", "")
        # Passed only when asked for: HailoRT before 5.1.0 has no such argument.
        extra = (
            {"optimize_memory_on_device": True}
            if bool_option(options, "optimize_memory_on_device", False)
            else {}
        )
        llms: list[Any] = []
        try:
            for _ in range(count):
                llms.append(self._genai.LLM(self._vdevice, str(hef), lora, **extra))
            model = HailoLLMModel(self, llms, options)
        except BaseException as exc:
            for llm in llms:
                with contextlib.suppress(self.hailo_error):
                    llm.release()
            if isinstance(exc, self.hailo_error):
                raise BackendError(f"HailoRT cannot load {hef.name}: {exc}") from exc
            if isinstance(exc, TypeError) and extra:
                raise BackendError(
                    "option optimize_memory_on_device needs HailoRT >= 5.1.0"
                ) from exc
            raise
        self._models.append(model)
        return model

    def forget(self, model: HailoLLMModel) -> None:
        with contextlib.suppress(ValueError):
            self._models.remove(model)

    def device_info(self) -> DeviceInfo:
        temperature: float | None = None
        try:
            if self._device is None:
                device_cls = self._hp.Device
                self._device = device_cls(self.device_id) if self.device_id else device_cls()
            reading = self._device.control.get_chip_temperature()
            temperature = float(max(reading.ts0_temperature, reading.ts1_temperature))
        except (self.hailo_error, AttributeError) as exc:
            log.debug("cannot read the Hailo-10H temperature: %s", exc)
        if temperature is not None and not math.isfinite(temperature):
            temperature = None
        return DeviceInfo(
            accelerator=ACCELERATOR, device_id=self.device_id, temperature_c=temperature
        )

    def close(self) -> None:
        for model in list(self._models):
            model.close()
        if self._device is not None:
            with contextlib.suppress(self.hailo_error):
                self._device.release()
            self._device = None
        with contextlib.suppress(self.hailo_error):
            self._vdevice.release()
