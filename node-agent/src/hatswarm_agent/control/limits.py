"""Bounds on what one control call may ask of an agent, checked before anything is fetched.

A LoadModel is the control plane's, but its fields come from EdgeModel specs that namespace
users write, so every field is range-checked here: names and URIs have a length, every option
the agent or a backend reads has a range (`intra_op_threads=200` would start 200 threads,
`queue_limit=2**62` would let one model hold the node's memory), and the number of models a
node remembers as FAILED is bounded (lifecycle.py keeps at most `MAX_FAILED_ENTRIES`, each
reason cut to `MAX_REASON_CHARS`), so NodeStatus stays far below a gRPC client's 4 MB limit
whatever a caller does. Every refusal is INVALID_ARGUMENT naming the field and its limit.

Options nobody reads are allowed (within the size bounds): backends grow new ones. Another
part of the agent that reads an option should add its bounds to `OPTION_LIMITS`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from hatswarm_agent.backends import canonical_name
from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.serving.errors import InvalidInputError

MAX_NAME_CHARS = 253  # a Kubernetes object name: what EdgeModel names are
MAX_VERSION_CHARS = 128
MAX_URI_CHARS = 4096
MAX_OPTIONS = 64
MAX_OPTION_KEY_CHARS = 64
MAX_OPTION_VALUE_CHARS = 4096
MAX_ADAPTERS = 64
MAX_SIGNATURE_CHARS = 256
MAX_PUBLIC_KEY_CHARS = 1024
MAX_FAILED_ENTRIES = 32
FAILED_TTL_S = 900.0
MAX_REASON_CHARS = 512
MAX_CACHE_TTL_S = 86_400 * 30
THREADS = max(4, os.cpu_count() or 1)
"""The most threads one option may ask for: this node's CPUs (at least 4)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Options the agent sets itself; a request naming them is a mistake.
RESERVED_OPTIONS = frozenset({"model_name", "uri"})


@dataclass(frozen=True)
class Limit:
    """One option's type and range ("int"/"float": [low, high]; "enum": one of `choices`;
    "bool"; "file": a plain file name inside the model's own folder; "text": any string)."""

    kind: str
    low: float = 0
    high: float = 0
    choices: tuple[str, ...] = ()


_BOOL = Limit("bool")
_SHORT = Limit("text", high=64)

OPTION_LIMITS: dict[str, Limit] = {
    # the agent (lifecycle.py, batching)
    "queue_limit": Limit("int", 1, 100_000),
    "max_batch_size": Limit("int", 1, 1024),
    "max_queue_delay_us": Limit("int", 0, 1_000_000),
    "inline_max_us": Limit("int", 0, 100_000),
    "adapter_slots": Limit("int", 1, 64),
    # onnxruntime
    "intra_op_threads": Limit("int", 0, THREADS),
    "inter_op_threads": Limit("int", 0, THREADS),
    "idle_intra_op_threads": Limit("int", 0, THREADS),
    "workers": Limit("int", 1, 2 * THREADS),  # runs at once; the default is the cores + 1
    "graph_optimization": Limit("enum", choices=("disable", "basic", "extended", "all")),
    "spinning": _BOOL,
    "sessions": Limit("enum", choices=("auto", "one", "two")),
    "arena": Limit("enum", choices=("shared", "session", "off")),
    # simulated NPU
    "profile": _SHORT,
    "fps_batch1": Limit("float", 0.001, 1e6),
    "fps_batch8": Limit("float", 0.001, 1e6),
    "latency_ms_batch1": Limit("float", 0.001, 60_000),
    "slowdown": Limit("float", 0.01, 1000),
    # Hailo
    "timeout_ms": Limit("int", 1, 600_000),
    "capacity_fps": Limit("float", 0, 1e6),
    "hw_arch": _SHORT,
    "hef_arch": _SHORT,
    "input_format": _SHORT,
    "output_format": _SHORT,
    "allow_hailo8l_on_hailo8": _BOOL,
    "hef": Limit("file"),
    # generative and embedding backends
    "max_sequences": Limit("int", 1, 64),
    "max_queued": Limit("int", 0, 100_000),
    "intra_op_num_threads": Limit("int", 0, THREADS),
    "prefix_cache": Limit("int", 0, 64),
    "prefix_headroom": Limit("int", 0, 131_072),
    "max_tokens": Limit("int", 1, 131_072),
    "batch_size": Limit("int", 1, 1024),
    "filename": Limit("file"),
    "pooling": _SHORT,
    "normalize": _BOOL,
    "warm_up": _BOOL,
    "isolation": Limit("enum", choices=("process", "thread")),
    "processes": Limit("int", 1, THREADS),
    "lora_name": _SHORT,
    "optimize_memory_on_device": _BOOL,
    "chat_template": Limit("text", high=MAX_OPTION_VALUE_CHARS),
    # llama.cpp
    "threads": Limit("int", 0, THREADS),
    "context_length": Limit("int", 16, 131_072),
    "embedding": _BOOL,
}

_TRUE_FALSE = ("1", "true", "yes", "on", "0", "false", "no", "off")


def _bounded(what: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidInputError(f"{what} is {len(value)} characters, over the limit of {limit}")


def check_name(what: str, value: str, limit: int = MAX_NAME_CHARS) -> None:
    """A model, version or adapter name: short, and letters, digits, '.', '_' or '-'."""
    _bounded(what, value, limit)
    if value and not _NAME.fullmatch(value):
        raise InvalidInputError(
            f"{what} {value[:64]!r} may hold only letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )


def check_option(key: str, value: str) -> None:
    """Range-check one option (INVALID_ARGUMENT naming the option and its limit)."""
    _bounded("option name", key, MAX_OPTION_KEY_CHARS)
    _bounded(f"option {key}", value, MAX_OPTION_VALUE_CHARS)
    if key in RESERVED_OPTIONS:
        raise InvalidInputError(f"option {key} is set by the agent, not by a request")
    limit = OPTION_LIMITS.get(key)
    if limit is None or value == "":
        return
    shown = value[:64]
    if limit.kind == "int":
        try:
            number = int(value)
        except ValueError:
            raise InvalidInputError(f"option {key}={shown!r} is not an integer") from None
        if not limit.low <= number <= limit.high:
            raise InvalidInputError(
                f"option {key}={number} is out of range: {limit.low:g} to {limit.high:g}"
            )
    elif limit.kind == "float":
        try:
            real = float(value)
        except ValueError:
            raise InvalidInputError(f"option {key}={shown!r} is not a number") from None
        if not (math.isfinite(real) and limit.low <= real <= limit.high):
            raise InvalidInputError(
                f"option {key}={shown} is out of range: {limit.low:g} to {limit.high:g}"
            )
    elif limit.kind == "enum":
        if value not in limit.choices:
            raise InvalidInputError(
                f"option {key}={shown!r}: expected one of {', '.join(limit.choices)}"
            )
    elif limit.kind == "bool":
        if value.strip().lower() not in _TRUE_FALSE:
            raise InvalidInputError(f"option {key}={shown!r} is not a boolean (true/false)")
    elif limit.kind == "file":
        if not _FILE_NAME.fullmatch(value) or len(value) > 255:
            raise InvalidInputError(
                f"option {key}={shown!r} must be a plain file name in the model's own folder "
                "(no '/', no '..', at most 255 characters)"
            )
    elif limit.kind == "text":
        _bounded(f"option {key}", value, int(limit.high))


def check_options(options: Mapping[str, str]) -> None:
    if len(options) > MAX_OPTIONS:
        raise InvalidInputError(f"{len(options)} options, over the limit of {MAX_OPTIONS}")
    for key, value in options.items():
        check_option(key, value)


def check_load_request(request: control_pb2.LoadModelRequest) -> None:
    """Every field of a LoadModel within its bounds, before anything is fetched or loaded."""
    if not request.name:
        raise InvalidInputError("LoadModel needs a model name")
    check_name("model name", request.name)
    check_name("version", request.version, MAX_VERSION_CHARS)
    if not request.uri:
        raise InvalidInputError(f"LoadModel '{request.name}' needs a uri")
    _bounded("uri", request.uri, MAX_URI_CHARS)
    _bounded("sha256", request.sha256, 64)
    _bounded("signature", request.signature, MAX_SIGNATURE_CHARS)
    _bounded("public_key", request.public_key, MAX_PUBLIC_KEY_CHARS)
    _bounded("backend", request.backend, 64)
    if request.backend:
        try:
            canonical_name(request.backend)
        except BackendError as exc:  # a caller's mistake, not the backend's: INVALID_ARGUMENT
            raise InvalidInputError(f"LoadModel '{request.name}': {exc}") from None
    _bounded("format", request.format, 16)
    if not 0 <= request.cache_ttl_seconds <= MAX_CACHE_TTL_S:
        raise InvalidInputError(
            f"cache_ttl_seconds={request.cache_ttl_seconds} is out of range: 0 to {MAX_CACHE_TTL_S}"
        )
    check_options(request.options)
    if len(request.adapters) > MAX_ADAPTERS:
        raise InvalidInputError(
            f"{len(request.adapters)} adapters, over the limit of {MAX_ADAPTERS}"
        )
    for adapter in request.adapters:
        check_name("adapter name", adapter.name)
        _bounded(f"adapter {adapter.name} uri", adapter.uri, MAX_URI_CHARS)
        _bounded(f"adapter {adapter.name} sha256", adapter.sha256, 64)


def short_reason(reason: str) -> str:
    """A FAILED entry's reason, cut to `MAX_REASON_CHARS` (NodeStatus carries every one)."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    suffix = " ... (truncated)"
    return reason[: MAX_REASON_CHARS - len(suffix)] + suffix
