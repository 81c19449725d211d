"""The HailoRT test double (tests/fakes/hailo_platform) used from outside it: the environment
of an agent process whose node "has" a chip, and the double's HEF writers called in this
process without leaving it importable as `hailo_platform` (a later test in the same session
must not take it for a real HailoRT, nor find the double's state of this one)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

FAKES = Path(__file__).resolve().parent / "fakes"
_MODULES = ("hailo_platform.genai", "hailo_platform")


def agent_env(chip: str) -> dict[str, str]:
    """Environment of an agent whose node has HailoRT and `chip` (hailo8l, hailo8, hailo10h;
    "none": HailoRT without a device)."""
    path = os.pathsep.join(p for p in (str(FAKES), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "HATSWARM_FAKE_HAILO_CHIP": chip}


def _double(module: str) -> Any:
    """A module of the double, imported and at once forgotten by sys.path and sys.modules."""
    sys.path.insert(0, str(FAKES))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(FAKES))
        for name in _MODULES:
            sys.modules.pop(name, None)


def write_hef(path: Path, chip: str) -> Path:
    """A HEF of the double compiled for `chip` (a Hailo-8/8L vision model)."""
    return Path(_double("hailo_platform").write_fake_hef(path, hw_arch=chip))


def write_llm_hef(path: Path, **options: Any) -> Path:
    """A GenAI (Hailo-10H) LLM HEF of the double; `options` as its write_fake_llm_hef takes."""
    return Path(_double("hailo_platform.genai").write_fake_llm_hef(path, **options))


def llm_words() -> list[str]:
    """The words a GenAI HEF written without `words` speaks."""
    return list(_double("hailo_platform.genai").WORDS)
