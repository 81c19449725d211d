"""Inference backends behind one small interface (see base.py), created by name.

The Hailo backend is imported only when asked for, so nodes without HailoRT never touch
`hailo_platform` and a missing module becomes a clear BackendUnavailableError.
"""

from __future__ import annotations

import importlib
from typing import Any

from hatswarm_agent.backends.base import Backend, BackendError, BackendUnavailableError

BACKEND_NAMES = (
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


__all__ = [
    "BACKEND_NAMES",
    "BackendError",
    "BackendUnavailableError",
    "canonical_name",
    "create_backend",
]
