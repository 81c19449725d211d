"""Hailo-10H GenAI backend (Raspberry Pi AI HAT+ 2): LLM HEFs through `hailo_platform.genai`.

HailoRT 5.x runs the whole LLM pipeline on the Hailo-10H (tokenizer, prompt template, KV cache
in its on-module memory); the host holds an `LLM(vdevice, hef, lora_name,
optimize_memory_on_device)` and reads generated text piece by piece from the context manager
`LLM.generate(...)`. Like `hailo_platform` itself, the module comes from Hailo's apt packages,
never from PyPI: it is imported lazily and its absence is a clear BackendUnavailableError.

An LLM object is a conversation: it keeps its context between calls and HailoRT allows only one
generation (one `LLMGeneratorCompletion`) at a time per object. hatswarm's requests are
stateless, so each one takes an idle LLM object, calls `clear_context()`, sets the stop tokens
(the model's own plus the request's), generates, and gives the object back. `max_sequences`
(option, default 1) LLM objects of the same HEF run side by side on the device when its
memory allows; `max_queued` requests may wait for one; the rest get BackendBusyError.

Token counts: each piece HailoRT yields is one generated token (it merges a lone U+FFFD into
the next piece, which then stands for two: counted as one, a rare undercount). Prompt tokens
come from `LLM.tokenize` for text prompts; chat prompts are templated on the device, so they
are counted from the context's size after the generation (less the generated tokens and the
recovery sequence HailoRT appends when a generation hits its token limit).

The OIP face (Triton vLLM tensor names, the ModelInfer loop) and the load report are shared with
the CPU generative backends (textgen.py, `SequenceSlots.load`); the rest is not, since the LLM
objects template, count and generate on the device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    Producer,
    Prompt,
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
READ_TIMEOUT_MS = 30_000
# ChatML and Llama-style prompts spend about this many template tokens per message: an
# estimate for routing before the device has templated a chat prompt.
CHAT_TOKENS_PER_MESSAGE = 4


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


class _Slot:
    """One LLM object and what the backend last told it."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.default_stops: list[str] = list(llm.get_stop_tokens())
        self.stops: list[str] = list(self.default_stops)
        self.in_use = 0  # context tokens of the running generation


class HailoLLMModel(LoadedModel):
    """One LLM HEF, as `max_sequences` LLM objects on the backend's VDevice."""

    capabilities = frozenset({GENERATE})
    max_batch_size = 0

    def __init__(
        self, backend: HailoGenaiBackend, llms: Sequence[Any], options: Mapping[str, str]
    ) -> None:
        self._backend = backend
        self._error = backend.hailo_error
        self._slots_free: deque[_Slot] = deque(_Slot(llm) for llm in llms)
        self._all = list(self._slots_free)
        self._lock = threading.Lock()
        self._slots = SequenceSlots(
            len(llms), int_option(options, "max_queued", DEFAULT_MAX_QUEUED, minimum=0)
        )
        self._executor = ThreadPoolExecutor(max_workers=len(llms), thread_name_prefix="hailo-llm")
        self.context_length = int(llms[0].max_context_capacity())
        self.prompt_template = str(llms[0].prompt_template())
        self.inputs = list(GENERATION_INPUTS)
        self.outputs = [TEXT_OUTPUT]
        self._closed = False

    # -- slots of LLM objects ------------------------------------------------------------------

    def _take(self) -> _Slot:
        with self._lock:
            return self._slots_free.popleft()  # a held sequence slot guarantees one is free

    def _give_back(self, slot: _Slot) -> None:
        slot.in_use = 0
        with self._lock:
            self._slots_free.append(slot)
        self._slots.release()

    # -- prompts ---------------------------------------------------------------------------------

    def count_tokens(self, prompt: Prompt) -> int:
        """Exact for text prompts; an estimate for chat messages (templated on the device).
        Blocking; needs an idle LLM object (BackendBusyError when every one is generating)."""
        if isinstance(prompt, str):
            text, overhead = prompt, 0
        else:
            messages = check_messages(prompt)
            text = "\n".join(f"{m['role']}\n{m['content']}" for m in messages)
            overhead = CHAT_TOKENS_PER_MESSAGE * len(messages) + 3
        self._slots.try_acquire()
        slot = self._take()
        try:
            return len(slot.llm.tokenize(text)) + overhead
        except self._error as exc:
            raise BackendError(f"HailoRT: {exc}") from exc
        finally:
            self._give_back(slot)

    def _prepare(
        self, slot: _Slot, prompt: str | list[dict[str, str]], params: GenerationParams
    ) -> int | None:
        """On the worker: a fresh context, this request's stop tokens, the prompt checked.
        Returns the prompt's tokens when they can be known before generating."""
        llm = slot.llm
        try:
            llm.clear_context()
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
        slot = self._take()
        try:
            prompt_tokens = await run_blocking(
                self._executor, lambda: self._prepare(slot, request, params)
            )
            return TokenStream.start(
                self._producer(slot, request, params, prompt_tokens),
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
        request: str | list[dict[str, str]],
        params: GenerationParams,
        prompt_tokens: int | None,
    ) -> Producer:
        kwargs = self._generate_kwargs(params, prompt_tokens, self.context_length)

        def produce(emit: Emitter, cancelled: threading.Event) -> Outcome:
            llm = slot.llm
            matcher = StopMatcher(params.stop)
            count, pending, status = 0, 0, ""
            slot.in_use = prompt_tokens or 0
            try:
                with llm.generate(prompt=request, **kwargs) as completion:
                    while _status(completion) == "GENERATING" and not cancelled.is_set():
                        text = completion.read(READ_TIMEOUT_MS)
                        count += 1
                        pending += 1
                        slot.in_use += 1
                        out = matcher.feed(text)
                        if out:
                            emit(Piece(out, pending))
                            pending = 0
                        if matcher.stopped:
                            break
                    status = _status(completion)
                usage = int(llm.get_context_usage_size())
                recovery = (
                    len(llm.tokenize(llm.get_generation_recovery_sequence()))
                    if status == "MAX_TOKENS_REACHED" and prompt_tokens is None
                    else 0
                )
            except self._error as exc:
                raise BackendError(f"HailoRT generation failed: {exc}") from exc
            tail = "" if matcher.stopped else matcher.flush()
            if tail or pending:
                emit(Piece(tail, pending))
            # A chat prompt was templated and counted on the device: read it off the context.
            counted = max(0, usage - count - recovery) if prompt_tokens is None else prompt_tokens
            finish: FinishReason = (
                "length" if status == "MAX_TOKENS_REACHED" and not matcher.stopped else "stop"
            )
            return Outcome(finish, count, counted)

        return produce

    # -- the OIP (non-streaming) path ----------------------------------------------------------

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """ModelInfer with vLLM-style tensors; blocking, called from a worker thread."""
        if self._closed:
            raise BackendError("model is unloaded")
        return run_prompts(inputs, self._complete)

    def _complete(self, text: str, params: GenerationParams) -> str:
        self._slots.try_acquire()
        slot = self._take()
        try:
            tokens = self._prepare(slot, text, params)
            completion, _ = drain_blocking(self._producer(slot, text, params, tokens))
        finally:
            self._give_back(slot)
        return completion

    # -- load and lifecycle ------------------------------------------------------------------------

    def load(self) -> GenerationLoad:
        return self._slots.load(sum(slot.in_use for slot in self._all), self.context_length)

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
        """Options: max_sequences (LLM objects, default 1), max_queued, lora_name,
        optimize_memory_on_device, hef (the file in a folder), hw_arch."""
        declared = options.get("hw_arch", "").strip().lower()
        if declared and declared != ACCELERATOR:
            raise BackendError(
                f"this node's NPU is a {ACCELERATOR} (Hailo-10H) but the HEF is compiled for "
                f"{declared}: place it on a matching node"
            )
        hef = find_hef(path, options)
        count = int_option(options, "max_sequences", 1, minimum=1)
        lora = options.get("lora_name", "")
        optimize = bool_option(options, "optimize_memory_on_device", False)
        llms: list[Any] = []
        try:
            for _ in range(count):
                llms.append(self._genai.LLM(self._vdevice, str(hef), lora, optimize))
            model = HailoLLMModel(self, llms, options)
        except self.hailo_error as exc:
            for llm in llms:
                with contextlib.suppress(self.hailo_error):
                    llm.release()
            raise BackendError(f"HailoRT cannot load {hef.name}: {exc}") from exc
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
