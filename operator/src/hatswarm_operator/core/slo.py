"""Is a generative model within its time-to-first-token target? The SLOMet condition and the
Event when it flips. Pure: plain data in, a Condition and maybe an Event out.

The measured figure is status.generation.ttftP99Ms: the slowest Ready replica's p99 over the
agents' last 60 s (what a client on the unlucky node sees). No traffic for 60 s leaves nothing
measured: the condition goes Unknown rather than keeping a verdict on stale figures.

Flips are judged against the loop's own memory of the last verdict (met or missed; Unknown is
neither), not against the stored condition: the stored status lags the loop (a status patch
reaches the informer cache a watch event later; `hatswarm up` never feeds its status back), so
judging against it posted the same flip again on every tick until it caught up, each time with
the newest figures. The stored condition is the memory only on a loop's first look at a model.
"""

from __future__ import annotations

from collections.abc import Sequence

from hatswarm_operator.api import EdgeModel
from hatswarm_operator.api.common import Condition
from hatswarm_operator.api.edgemodel import GenerationStatus
from hatswarm_operator.core.conditions import condition
from hatswarm_operator.core.plan import ResourceEvent

SLO_MET = "SLOMet"


def slo_condition(
    target_ms: float, measured: GenerationStatus | None, now: float, generation: int
) -> Condition:
    """SLOMet: True when the measured TTFT p99 is within `target_ms`, False above it, Unknown
    when nothing was measured; the message names measured against target."""
    p99 = measured.ttft_p99_ms if measured is not None else None
    if p99 is None:
        return condition(
            SLO_MET,
            None,
            "NotMeasured",
            f"no time to first token measured in the last 60 s (target p99 {target_ms:g} ms)",
            now,
            generation,
        )
    p50 = measured.ttft_p50_ms if measured is not None else None
    median = f", p50 {p50:g} ms" if p50 is not None else ""
    ok = p99 <= target_ms
    return condition(
        SLO_MET,
        ok,
        "WithinTarget" if ok else "TTFTAboveTarget",
        f"time to first token p99 {p99:g} ms {'within' if ok else 'above'} the target "
        f"{target_ms:g} ms{median}",
        now,
        generation,
    )


def stored_verdict(conditions: Sequence[Condition]) -> bool | None:
    """The verdict a stored SLOMet condition holds: True met, False missed, None neither."""
    status = next((c.status for c in conditions if c.type == SLO_MET), "Unknown")
    return {"True": True, "False": False}.get(status)


def slo_verdict(last: bool | None, after: Condition | None) -> bool | None:
    """The last verdict once `after` is judged: its own when met or missed, else `last`."""
    if after is None or after.status == "Unknown":
        return last
    return after.status == "True"


def slo_event(model: str, last: bool | None, after: Condition | None) -> ResourceEvent | None:
    """The Event of a flip from the `last` verdict (None: none yet) between met and missed.
    Unknown, no traffic, is neither: a model that misses again after a quiet spell is told
    once more only if it was met in between."""
    if after is None or after.status == "Unknown":
        return None
    if after.status == "False" and last is not False:
        return ResourceEvent("EdgeModel", model, "Warning", "SLOMissed", after.message or "")
    if after.status == "True" and last is False:
        return ResourceEvent("EdgeModel", model, "Normal", "SLOMet", after.message or "")
    return None


def model_slo(m: EdgeModel, measured: GenerationStatus | None, now: float) -> Condition | None:
    """The model's SLOMet condition, None when its spec sets no TTFT target.

    While the verdict (status and reason) and the target stay, the stored message stays too:
    it names the figures that made the verdict, and the live figure is in status.generation.
    A message moving with every measurement would rewrite the status each tick (the loop
    writes live measurements only every few seconds, conditions at once)."""
    target = m.spec.slo.ttft_p99_ms
    if target is None:
        return None
    new = slo_condition(target, measured, now, m.metadata.generation)
    old = next((c for c in (m.status.conditions if m.status else []) if c.type == SLO_MET), None)
    if (
        old is not None
        and (old.status, old.reason) == (new.status, new.reason)
        and f"target {target:g} ms" in (old.message or "")
    ):
        return new.model_copy(update={"message": old.message})
    return new
