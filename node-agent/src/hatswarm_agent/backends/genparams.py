"""What a generation request is: its prompt, its sampling parameters, the errors that refuse it,
and the stop sequences that end it. Pure data and checks, shared by every generative backend and
by the front doors that build requests."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hatswarm_agent.backends.base import BackendError

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
    # Report the log-probability (Piece.logprob) of the first `logprobs` tokens where the
    # runtime exposes logits; set by the router for a route that escalates uncertain
    # generations (its judging window), never by a client.
    logprobs: int = 0

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
        if self.logprobs < 0:
            raise GenerationRequestError(f"logprobs must be >= 0, got {self.logprobs}")
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
