"""A test double of HailoRT 5.x's `hailo_platform.genai` (LLM on a Hailo-10H), never shipped.

Same names and signatures as the real module (hailo-ai/hailort v5.2:
hailort/libhailort/bindings/python/platform/hailo_platform/genai/__init__.py re-exports
`VDevice` and `LLM` from pyhailort/pyhailort.py; `LLMGeneratorCompletionStatus` comes from the
C++ binding, hailort/libhailort/bindings/python/src/pyhailort.cpp), and the rules its docs
state, which the fake enforces so a backend that breaks them fails here:

- only one `LLMGeneratorCompletion` per LLM at a time: a second `generate` while the previous
  completion is neither finished nor released raises;
- an LLM keeps the conversation (its context) across calls until `clear_context()`. As in
  HailoRT's client (libhailort/src/genai/llm/minja_wrapper: PromptTemplateHandler), the first
  chat prompt after creation or `clear_context()` is templated whole (with the template's
  default system prompt when it has no system message, as Qwen's does); later ones are
  templated as a continuation, and system messages or tools in them raise. `load_context`
  replaces the context but not that client-side state, exactly like HailoRT 5.1.1/5.2;
- `save_context()`/`load_context(data)` carry a context between LLM objects of the same model;
- `GENAI.version` plays a HailoRT release, with the LLM methods its Python binding has
  (hailort's bindings/python/src/llm_api.cpp at each tag): before 5.1.1 there is no
  `save_context`, `load_context`, `max_context_capacity` or `get_context_usage_size` (the
  attributes are missing, as on the real objects); before 5.1.0 `LLM()` takes no
  `optimize_memory_on_device` (a TypeError, as Python raises for an unknown argument);
- `generate(...)` is a context manager whose iteration yields text pieces, one per token;
  `read()` past the end or after `release()` raises.

A "HEF" is a JSON file (`write_fake_llm_hef`). Tokens are the special tokens (`<|...|>`) and the
whitespace-led words of the text; a token's id ignores its leading whitespace, so a context
continued turn by turn holds the same ids as the whole conversation templated at once (as the
real tokenizers' special tokens make it). Generation is deterministic and depends on every id of
the context, like a model's: with `do_sample` false the next word is
`words[crc32(context ids) % len(words)]`, with `do_sample` a `random.Random` seeded by (seed,
that crc) picks it. Generating the HEF's `eos` word ends the generation
(LOGICAL_END_OF_GENERATION) without yielding it (it stays in the context); generating text that
ends with a stop token yields it and ends the same way; `max_generated_tokens` ends it with
MAX_TOKENS_REACHED and, like an abort, appends the recovery sequence to the context. Each LLM
records the context calls made on it in `calls` (generate, clear_context, save_context,
load_context). `GENAI` is the device state tests adjust: its
`gate`, when set, makes every `read()` wait for it, so a generation can be held in flight.
"""

from __future__ import annotations

import enum
import json
import random
import re
import threading
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hailo_platform import HailoRTException, VDevice

DEFAULT_SYSTEM = "You are a helpful assistant."
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n"
    + DEFAULT_SYSTEM
    + "<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
)
WORDS = [
    "the", "pool", "serves", "tokens", "at", "the", "edge,", "a", "tiny", "board", "answers",
    "quickly.", "stream", "each", "piece", "to", "the", "client", "and", "count", "them", "all.",
    "<|im_end|>",
]  # fmt: skip
# LLM methods HailoRT's Python binding gained in 5.1.1.
SINCE_5_1_1 = ("save_context", "load_context", "max_context_capacity", "get_context_usage_size")
_WORD = re.compile(r"<\|[^|>\s]*\|>|\s*(?:(?!<\|)\S)+")


class LLMGeneratorCompletionStatus(enum.Enum):
    GENERATING = 0
    MAX_TOKENS_REACHED = 1
    LOGICAL_END_OF_GENERATION = 2
    ABORTED = 3


@dataclass
class GenaiHardware:
    """The Hailo-10H the fake pretends is there, and what was asked of it."""

    arch: str = "hailo10h"
    llms: list[LLM] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)  # params of every generate
    gate: threading.Event | None = None  # when set: read() waits for it
    version: tuple[int, int, int] = (5, 2, 0)  # the HailoRT release played

    def reset(self) -> None:
        fresh = GenaiHardware()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))


GENAI = GenaiHardware()


def write_fake_llm_hef(
    path: Path,
    *,
    hw_arch: str = "hailo10h",
    context_capacity: int = 2048,
    max_generated_tokens: int = 200,
    words: list[str] | None = None,
    eos: str = "<|im_end|>",
    stop_tokens: list[str] | None = None,
    recovery_sequence: str = "<|im_end|>",
) -> Path:
    doc = {
        "fake_llm_hef": 1,
        "hw_arch": hw_arch,
        "context_capacity": context_capacity,
        "max_generated_tokens": max_generated_tokens,
        "words": words or WORDS,
        "eos": eos,
        "stop_tokens": [eos] if stop_tokens is None else stop_tokens,
        "recovery_sequence": recovery_sequence,
        "prompt_template": CHATML,
    }
    path.write_text(json.dumps(doc))
    return path


def token_id(word: str) -> int:
    return zlib.crc32(word.strip().encode()) % 151_646


def tokenize_text(text: str) -> list[int]:
    return [token_id(w) for w in _WORD.findall(text)]


def render_chatml(messages: list[dict[str, Any]], *, continuation: bool = False) -> str:
    """The template applied: a whole conversation, or (`continuation`) the messages that
    follow a context's earlier turns, as HailoRT renders them (no default system prompt)."""
    if not continuation and (not messages or messages[0].get("role") != "system"):
        messages = [{"role": "system", "content": DEFAULT_SYSTEM}, *messages]
    parts = [f"<|im_start|>{m.get('role')}\n{m.get('content')}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


class _GeneratorParams:
    def __init__(self, max_generated_tokens: int) -> None:
        self.temperature = 0.7
        self.top_p = 0.8
        self.top_k = 20
        self.frequency_penalty = 1.1
        self.max_generated_tokens = max_generated_tokens
        self.do_sample = True
        self.seed = 0xFFFFFFFF  # HAILO_RANDOM_SEED


class LLMGeneratorCompletion:
    def __init__(self, llm: LLM, params: _GeneratorParams) -> None:
        self._llm = llm
        self._params = params
        self._status = LLMGeneratorCompletionStatus.GENERATING
        self._generated = 0
        self._text = ""
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            if self._status is LLMGeneratorCompletionStatus.GENERATING:
                self._status = LLMGeneratorCompletionStatus.ABORTED
                self._llm._context.extend(tokenize_text(self._llm._recovery))
            if self._llm._active is self:
                self._llm._active = None

    def __enter__(self) -> LLMGeneratorCompletion:
        return self

    def __exit__(self, *args: object) -> bool:
        self.release()
        return False

    @property
    def generation_status(self) -> LLMGeneratorCompletionStatus:
        return self._status

    def read(self, timeout_ms: int = 10000) -> str:
        if self._released:
            raise HailoRTException("libhailort failed with error: 8 (HAILO_INVALID_OPERATION)")
        if self._status is not LLMGeneratorCompletionStatus.GENERATING:
            raise HailoRTException("generation is over: HAILO_INVALID_OPERATION")
        gate = GENAI.gate
        if gate is not None and not gate.wait(timeout_ms / 1000):
            raise HailoRTException("libhailort failed with error: 4 (HAILO_TIMEOUT)")
        return self._next_piece()

    def _next_piece(self) -> str:
        llm, doc = self._llm, self._llm._doc
        context = llm._context
        words: list[str] = doc["words"]
        digest = zlib.crc32(array("q", context).tobytes())
        if self._params.do_sample:
            rng = random.Random(self._params.seed * 1_000_003 + digest)
            word = words[rng.randrange(len(words))]
        else:
            word = words[digest % len(words)]
        piece = word if not self._text else " " + word
        context.append(token_id(piece))
        self._generated += 1
        if word == doc["eos"]:
            self._status = LLMGeneratorCompletionStatus.LOGICAL_END_OF_GENERATION
            return ""
        self._text += piece
        if any(self._text.endswith(stop) for stop in llm._stop_tokens):
            self._status = LLMGeneratorCompletionStatus.LOGICAL_END_OF_GENERATION
        elif (
            self._generated >= self._params.max_generated_tokens
            or len(context) >= doc["context_capacity"]
        ):
            self._status = LLMGeneratorCompletionStatus.MAX_TOKENS_REACHED
            context.extend(tokenize_text(llm._recovery))
        return piece

    def read_all(self, timeout_ms: int = 10000) -> str:
        parts = []
        while self._status is LLMGeneratorCompletionStatus.GENERATING:
            parts.append(self.read(timeout_ms))
        return "".join(parts)

    def __iter__(self) -> LLMGeneratorCompletion:
        return self

    def __next__(self) -> str:
        if self.generation_status != LLMGeneratorCompletionStatus.GENERATING:
            raise StopIteration("Generation complete")
        return self.read()


class LLM:
    def __init__(
        self,
        vdevice: VDevice,
        model_path: str,
        lora_name: str = "",
        optimize_memory_on_device: bool | None = None,
    ) -> None:
        if optimize_memory_on_device is not None and GENAI.version < (5, 1, 0):
            raise TypeError("__init__() got an unexpected argument 'optimize_memory_on_device'")
        if vdevice.released:
            raise HailoRTException("VDevice was released")
        if GENAI.arch != "hailo10h":
            raise HailoRTException("libhailort failed with error: 7 (HAILO_NOT_SUPPORTED)")
        try:
            doc = json.loads(Path(model_path).read_text())
            assert doc["fake_llm_hef"] == 1
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            raise HailoRTException("Invalid HEF. See hailort.log for more information") from exc
        if doc["hw_arch"] != GENAI.arch:
            raise HailoRTException("libhailort failed with error: 26 (HAILO_INVALID_HEF)")
        self._doc = doc
        self.lora_name = lora_name
        self.optimize_memory_on_device = bool(optimize_memory_on_device)
        self._context: list[int] = []
        self._stop_tokens: list[str] = list(doc["stop_tokens"])
        self._recovery: str = doc["recovery_sequence"]
        self._active: LLMGeneratorCompletion | None = None
        self._released = False
        self._first_prompt = True  # HailoRT's PromptTemplateHandler state
        self.calls: list[str] = []
        GENAI.llms.append(self)

    def __getattribute__(self, name: str) -> Any:
        if name in SINCE_5_1_1 and GENAI.version < (5, 1, 1):
            raise AttributeError(f"'LLM' object has no attribute {name!r}")
        return super().__getattribute__(name)

    def _check(self) -> None:
        if self._released:
            raise HailoRTException("LLM was released")

    def release(self) -> None:
        self._released = True

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *args: object) -> bool:
        self.release()
        return False

    @property
    def released(self) -> bool:
        return self._released

    def generate(
        self,
        prompt: str | list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        frequency_penalty: float | None = None,
        max_generated_tokens: int | None = None,
        do_sample: bool | None = None,
        seed: int | None = None,
    ) -> LLMGeneratorCompletion:
        self._check()
        active = self._active
        if (
            active is not None
            and active.generation_status is LLMGeneratorCompletionStatus.GENERATING
        ):
            raise HailoRTException(
                "only one LLMGeneratorCompletion may exist at a time (HAILO_INVALID_OPERATION)"
            )
        if isinstance(prompt, str):
            text = prompt
        else:
            if not isinstance(prompt, list) or not all(isinstance(m, dict) for m in prompt):
                raise HailoRTException("prompt must be a list of dicts")
            if not self._first_prompt and (tools or any(m.get("role") == "system" for m in prompt)):
                raise HailoRTException(
                    "tools and system messages are only allowed on the first prompt of a "
                    "context (HAILO_INVALID_OPERATION)"
                )
            messages = [json.loads(json.dumps(m)) for m in prompt]
            text = render_chatml(messages, continuation=not self._first_prompt)
            self._first_prompt = False
        ids = tokenize_text(text)
        if len(self._context) + len(ids) >= self._doc["context_capacity"]:
            raise HailoRTException("libhailort failed with error: 2 (HAILO_INVALID_ARGUMENT)")
        params = _GeneratorParams(self._doc["max_generated_tokens"])
        for name, value in {
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "frequency_penalty": frequency_penalty,
            "max_generated_tokens": max_generated_tokens,
            "do_sample": do_sample,
            "seed": seed,
        }.items():
            if value is not None:
                setattr(params, name, value)
        GENAI.generations.append({"prompt": prompt, "tools": tools, **vars(params)})
        self.calls.append("generate")
        self._context.extend(ids)
        self._active = LLMGeneratorCompletion(self, params)
        return self._active

    def generate_all(self, prompt: str | list[dict[str, Any]], *args: Any, **kwargs: Any) -> str:
        timeout_ms = kwargs.pop("timeout_ms", 600000)
        with self.generate(prompt, *args, **kwargs) as completion:
            return completion.read_all(timeout_ms)

    def tokenize(self, text: str) -> list[int]:
        self._check()
        return tokenize_text(text)

    def get_context_usage_size(self) -> int:
        return len(self._context)

    def max_context_capacity(self) -> int:
        return int(self._doc["context_capacity"])

    def clear_context(self) -> None:
        self._check()
        if self._active is not None and (
            self._active.generation_status is LLMGeneratorCompletionStatus.GENERATING
        ):
            raise HailoRTException("cannot clear the context while generating")
        self.calls.append("clear_context")
        self._context.clear()
        self._first_prompt = True

    def get_generation_recovery_sequence(self) -> str:
        return self._recovery

    def set_generation_recovery_sequence(self, sequence: str) -> None:
        self._recovery = sequence

    def prompt_template(self) -> str:
        return str(self._doc["prompt_template"])

    def set_stop_tokens(self, stop_tokens: list[str]) -> None:
        self._stop_tokens = list(stop_tokens)

    def get_stop_tokens(self) -> list[str]:
        return list(self._stop_tokens)

    def save_context(self) -> bytes:
        self._check()
        self.calls.append("save_context")
        return json.dumps({"model": self._doc, "context": self._context}).encode()

    def load_context(self, context_data: bytes) -> None:
        """Replaces the context; the prompt template's state stays (as in HailoRT)."""
        self._check()
        self.calls.append("load_context")
        saved = json.loads(bytes(context_data))
        if saved["model"] != self._doc:
            raise HailoRTException("the context is from another model (HAILO_INVALID_ARGUMENT)")
        self._context = list(saved["context"])


class VLM:  # present in the real module; hatswarm does not use it yet
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise HailoRTException("the fake has no VLM")


__all__ = ["GENAI", "LLM", "VLM", "LLMGeneratorCompletion", "VDevice", "write_fake_llm_hef"]
