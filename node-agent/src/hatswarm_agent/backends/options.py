"""Backend load options (`LoadModel.options`, `--model ...#key=value`): strings in, typed values
out, and a BackendError naming the option and the rule when one does not parse."""

from __future__ import annotations

from collections.abc import Mapping

from hatswarm_agent.backends.base import BackendError


def int_option(options: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    """Read an integer option, with a BackendError naming it when it is not one."""
    raw = options.get(key, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BackendError(f"option {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise BackendError(f"option {key}={value} must be >= {minimum}")
    return value


def float_option(options: Mapping[str, str], key: str, default: float) -> float:
    raw = options.get(key, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BackendError(f"option {key}={raw!r} is not a number") from None
    if not value > 0:
        raise BackendError(f"option {key}={value} must be > 0")
    return value


def bool_option(options: Mapping[str, str], key: str, default: bool) -> bool:
    raw = options.get(key, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise BackendError(f"option {key}={raw!r} is not a boolean")
