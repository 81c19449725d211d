"""Inference backends behind one small interface (see base.py), created by name.

The Hailo backend is imported only when asked for, so nodes without HailoRT never touch
`hailo_platform` and a missing module becomes a clear BackendUnavailableError.

`auto` (the default of a pool's agents) is decided once per agent by :func:`select_backend`:
HailoRT when `hailo_platform` imports and a device opens (the chip is then whatever HailoRT
identifies), else onnxruntime on the CPU. A pinned backend that cannot exist here is not an
exception at start: the selection carries the reason, the agent keeps running and reports it
(NodeStatus `backend_error`), so the operator can say so instead of watching a crash loop.
"""

from __future__ import annotations

import importlib
import urllib.parse
from dataclasses import dataclass
from typing import Any

from hatswarm_agent.backends.base import Backend, BackendError, BackendUnavailableError

AUTO = "auto"
BACKEND_NAMES = (
    AUTO,
    "onnxruntime",
    "simulated",
    "hailo",
    "onnxruntime-genai",
    "hailo-genai",
    "embedding",
)
_ALIASES = {
    "onnx": "onnxruntime",
    "ort": "onnxruntime",
    "genai": "onnxruntime-genai",
    "embed": "embedding",
}


def canonical_name(name: str) -> str:
    """The registry name for `name` (accepts a few aliases); BackendError when unknown."""
    canonical = _ALIASES.get(name, name)
    if canonical not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}: expected one of {list(BACKEND_NAMES)}")
    return canonical


def create_backend(name: str, accelerator: str = "cpu") -> Backend:
    """A new backend instance; `accelerator` picks the simulated device kind."""
    canonical = canonical_name(name)
    if canonical == AUTO:
        selection = select_backend(AUTO, accelerator)
        assert selection.backend is not None  # auto always ends on the CPU at worst
        return selection.backend
    if canonical == "onnxruntime":
        from hatswarm_agent.backends.onnx import OnnxBackend

        return OnnxBackend()
    if canonical == "simulated":
        from hatswarm_agent.backends.simulated import SimulatedBackend

        return SimulatedBackend(accelerator if accelerator != "cpu" else "hailo8l")
    if canonical in _GENERATIVE:  # generative backends (issue "Generative edge")
        module_name, class_name = _GENERATIVE[canonical]
        backend: Backend = getattr(importlib.import_module(module_name), class_name)()
        return backend
    return _create_hailo(accelerator)


_GENERATIVE = {
    "onnxruntime-genai": ("hatswarm_agent.backends.genai", "GenaiBackend"),
    "hailo-genai": ("hatswarm_agent.backends.hailo_genai", "HailoGenaiBackend"),
    "embedding": ("hatswarm_agent.backends.embed", "EmbeddingBackend"),
}


def _create_hailo(accelerator: str) -> Backend:
    try:
        module: Any = importlib.import_module("hatswarm_agent.backends.hailo")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"hailo backend unavailable: {exc} (install HailoRT's python3-hailort and create "
            "the venv with --system-site-packages)"
        ) from exc
    factory = getattr(module, "create_backend", None) or getattr(module, "HailoBackend", None)
    if factory is None:
        raise BackendUnavailableError("hatswarm_agent.backends.hailo defines no HailoBackend")
    try:
        backend: Backend = factory()
    except BackendError:
        raise
    except ImportError as exc:
        raise BackendUnavailableError(f"hailo backend unavailable: {exc}") from exc
    return backend


@dataclass(frozen=True)
class Selection:
    """The backend an agent serves with, and why: what `--backend` asked for and what it got."""

    requested: str  # canonical name asked for: "auto", "hailo", ...
    name: str  # the backend serving: "hailo", "onnxruntime", ... ("" when none could open)
    backend: Backend | None
    reason: str  # one sentence for logs, NodeStatus and metrics

    @property
    def ready(self) -> bool:
        return self.backend is not None


def select_backend(name: str, accelerator: str = "cpu") -> Selection:
    """Open the backend `name` asks for; for `auto`, HailoRT when a device opens, else the CPU.

    Never raises for a backend that cannot exist on this node (BackendError only for an
    unknown name): the Selection then has no backend and says why.
    """
    canonical = canonical_name(name)
    if canonical != AUTO:
        try:
            backend = create_backend(canonical, accelerator)
        except BackendUnavailableError as exc:
            return Selection(canonical, "", None, f"backend {canonical} unavailable: {exc}")
        return Selection(canonical, backend.name, backend, f"backend {canonical} (pinned)")
    try:
        hailo = _create_hailo(accelerator)
    except BackendUnavailableError as exc:
        from hatswarm_agent.backends.onnx import OnnxBackend

        return Selection(AUTO, "onnxruntime", OnnxBackend(), f"auto: serving on the CPU ({exc})")
    chip = hailo.device_info().accelerator
    return Selection(AUTO, hailo.name, hailo, f"auto: HailoRT opened a {chip}")


def artifact_format(fmt: str, uri: str) -> str:
    """The artifact kind ("hef", "onnx"): the LoadModel's format, else the URI suffix, else ""."""
    if fmt:
        return fmt.lower()
    path = urllib.parse.urlsplit(uri).path if "://" in uri else uri
    for suffix in ("hef", "onnx"):
        if path.lower().endswith(f".{suffix}"):
            return suffix
    return ""


__all__ = [
    "AUTO",
    "BACKEND_NAMES",
    "BackendError",
    "BackendUnavailableError",
    "Selection",
    "artifact_format",
    "canonical_name",
    "create_backend",
    "select_backend",
]
