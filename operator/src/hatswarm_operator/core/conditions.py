"""metav1.Condition for both resources: built with one timestamp format, merged so that a
condition keeps its lastTransitionTime until its status really changes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

from hatswarm_operator.api.common import Condition


def rfc3339(now: float) -> str:
    """A Kubernetes timestamp (whole seconds, UTC)."""
    return _rfc3339(int(now))


@functools.lru_cache(maxsize=4096)
def _rfc3339(seconds: int) -> str:
    """Cached: a thousand-node pool's status stamps every node each tick, mostly with the same
    few seconds (strftime costs ~10 us)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, ok: bool | None, reason: str, message: str, now: float, generation: int
) -> Condition:
    """A condition whose status is True, False or (``ok is None``) Unknown."""
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=rfc3339(now),
        observed_generation=generation,
    )


def merge_conditions(old: Sequence[Condition], new: Sequence[Condition]) -> list[Condition]:
    """Keep lastTransitionTime when a condition's status did not change (metav1 semantics)."""
    before = {c.type: c for c in old}
    out = []
    for c in new:
        prev = before.get(c.type)
        if prev is not None and prev.status == c.status:
            c = c.model_copy(update={"last_transition_time": prev.last_transition_time})
        out.append(c)
    return out
