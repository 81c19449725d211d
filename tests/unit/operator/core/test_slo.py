"""A generative model's time-to-first-token target: the SLOMet condition and its Events, from
plain data (what the agents reported), no cluster."""

from __future__ import annotations

from typing import Any

import pytest
from hatswarm_operator.api import EdgeModel
from hatswarm_operator.api.common import Condition
from hatswarm_operator.api.edgemodel import GenerationStatus
from hatswarm_operator.core.inventory import GenerationObs, ModelObs, ModelState
from hatswarm_operator.core.plan import PoolPlan
from hatswarm_operator.core.reconcile import plan_pool
from hatswarm_operator.core.slo import slo_condition, slo_event, stored_verdict
from pydantic import ValidationError

from tests.unit.operator.factories import (
    POOL_LABELS,
    cpu_artifact,
    make_model,
    make_node,
    make_pool,
)


def chat(status: dict[str, Any] | None = None, **slo: float) -> EdgeModel:
    m = make_model(
        "chat",
        replicas=2,
        task="generate",
        artifacts=[cpu_artifact("file:///chat.tar.gz")],
        slo=slo,
    )
    if status is not None:
        m = EdgeModel.model_validate({**m.model_dump(by_alias=True), "status": status})
    return m


def serving(name: str, p50: float, p99: float) -> Any:
    gen = GenerationObs(ttft_p50_ms=p50, ttft_p99_ms=p99, tokens_per_second=40.0)
    obs = ModelObs("chat", "1", ModelState.READY, generation=gen)
    return make_node(name, obs, accelerator="cpu")


def quiet(name: str) -> Any:
    """A node serving chat that measured no first token in the last 60 s."""
    return make_node(name, ModelObs("chat", "1", ModelState.READY), accelerator="cpu")


def tick(m: EdgeModel, *nodes: Any, last: PoolPlan | None = None) -> PoolPlan:
    """One reconcile, remembering what the `last` one judged (as the loop does)."""
    pool = make_pool(generation=1, nodeSelector=POOL_LABELS)
    return plan_pool(pool, [m], list(nodes), now=0, slo=last.slo if last else None)


def flips(plan: PoolPlan) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in plan.transitions]


def slo_of(m: EdgeModel, *nodes: Any) -> tuple[Condition | None, list[Any]]:
    plan = tick(m, *nodes)
    cond = {c.type: c for c in plan.model_status["chat"].conditions}.get("SLOMet")
    assert not [e for e in plan.events if e.reason in ("SLOMet", "SLOMissed")]
    return cond, plan.transitions


def test_within_above_and_unmeasured() -> None:
    gen = GenerationStatus(ttft_p50_ms=120.0, ttft_p99_ms=280.5)
    met = slo_condition(300, gen, 0, 1)
    assert (met.status, met.reason) == ("True", "WithinTarget")
    assert met.message == "time to first token p99 280.5 ms within the target 300 ms, p50 120 ms"
    missed = slo_condition(250, gen, 0, 1)
    assert (missed.status, missed.reason) == ("False", "TTFTAboveTarget")
    assert "p99 280.5 ms above the target 250 ms" in (missed.message or "")
    assert slo_condition(280.5, gen, 0, 1).status == "True"  # the target itself is met
    for nothing in (None, GenerationStatus()):
        unknown = slo_condition(300, nothing, 0, 1)
        assert (unknown.status, unknown.reason) == ("Unknown", "NotMeasured")


def cond(status: str) -> Condition:
    return Condition(type="SLOMet", status=status, reason="r", message="m")


def test_events_only_when_met_and_missed_flip() -> None:
    missed = slo_condition(100, GenerationStatus(ttft_p99_ms=412.0), 0, 1)
    met = slo_condition(500, GenerationStatus(ttft_p99_ms=412.0), 0, 1)
    unknown = slo_condition(500, None, 0, 1)
    ev = slo_event("chat", None, missed)
    assert ev is not None and (ev.type, ev.reason) == ("Warning", "SLOMissed")
    assert "p99 412 ms above the target 100 ms" in ev.message
    assert slo_event("chat", False, missed) is None  # still missed: said already
    back = slo_event("chat", False, met)
    assert back is not None and (back.type, back.reason) == ("Normal", "SLOMet")
    assert slo_event("chat", None, met) is None  # met from the start: nothing to say
    assert slo_event("chat", True, met) is None
    assert slo_event("chat", False, unknown) is None  # no traffic is no verdict
    assert slo_event("chat", True, missed) is not None
    assert slo_event("chat", None, None) is None
    # A stored condition is the memory only on a loop's first look.
    assert [stored_verdict([cond(s)]) for s in ("True", "False", "Unknown")] == [True, False, None]
    assert stored_verdict([]) is None


def test_the_pool_plan_reports_the_slowest_replica_against_the_target() -> None:
    m = chat(ttftP99Ms=300)
    cond_, events = slo_of(m, serving("n1", 90, 180), serving("n2", 150, 420))
    assert cond_ is not None and cond_.status == "False"
    assert cond_.message == "time to first token p99 420 ms above the target 300 ms, p50 150 ms"
    assert [(e.type, e.reason) for e in events] == [("Warning", "SLOMissed")]

    # Stored as missed: no new Event, and the message that made the verdict stays while the
    # live figure moves (status.generation has it); met again: an Event.
    stored = {"conditions": [cond_.model_dump(by_alias=True, exclude_none=True)]}
    again, events = slo_of(chat(stored, ttftP99Ms=300), serving("n2", 150, 450))
    assert again is not None and again.status == "False" and again.message == cond_.message
    assert events == []
    better, events = slo_of(chat(stored, ttftP99Ms=300), serving("n2", 100, 240))
    assert better is not None and better.status == "True"
    assert [(e.type, e.reason) for e in events] == [("Normal", "SLOMet")]
    assert "p99 240 ms within the target 300 ms" in events[0].message


def test_no_target_no_condition() -> None:
    cond_, events = slo_of(chat(), serving("n1", 90, 900))
    assert cond_ is None and events == []


def test_the_target_needs_task_generate() -> None:
    with pytest.raises(ValidationError, match=r"slo\.ttftP99Ms needs task generate"):
        make_model("cls", slo={"ttftP99Ms": 300})
    with pytest.raises(ValidationError, match="ttftP99Ms"):
        chat(ttftP99Ms=0)


def test_a_flip_is_posted_once_while_the_stored_status_lags() -> None:
    """The status patch of a flip reaches the informer cache a watch event later (and
    `hatswarm up` never feeds status back): the next ticks still see the old condition, and
    judged against it each tick's newest p99 made a new SLOMissed message, so a new Event."""
    m = chat(ttftP99Ms=300)  # its stored status never catches up here
    first = tick(m, serving("n1", 150, 420))
    assert flips(first) == [("Warning", "SLOMissed")]
    assert first.slo == {"chat": False}
    for p99 in (420, 450, 470):  # the same measurement, then moving ones
        again = tick(m, serving("n1", 150, p99), last=first)
        assert flips(again) == [], p99
        assert again.slo == {"chat": False}
    # What the stale status alone would have said: the flip again, with a new message.
    stale = tick(m, serving("n1", 150, 450))
    assert flips(stale) == [("Warning", "SLOMissed")]
    assert stale.transitions[0].message != first.transitions[0].message


def test_each_flip_is_posted_even_when_its_message_repeats() -> None:
    m = chat(ttftP99Ms=300)
    plans = [tick(m, serving("n1", 150, 420))]
    for p99 in (240, 420, 420, 240):
        plans.append(tick(m, serving("n1", 150, p99), last=plans[-1]))
    assert [flips(p) for p in plans] == [
        [("Warning", "SLOMissed")],
        [("Normal", "SLOMet")],
        [("Warning", "SLOMissed")],  # the first one's very message: still a new flip
        [],
        [("Normal", "SLOMet")],
    ]
    assert plans[2].transitions[0].message == plans[0].transitions[0].message


def test_a_quiet_spell_between_two_misses_is_not_a_new_flip() -> None:
    m = chat(ttftP99Ms=300)
    missed = tick(m, serving("n1", 150, 420))
    silent = tick(m, quiet("n1"), last=missed)
    cond_ = {c.type: c for c in silent.model_status["chat"].conditions}["SLOMet"]
    assert cond_.status == "Unknown" and flips(silent) == []
    assert silent.slo == {"chat": False}  # Unknown keeps the last verdict
    assert flips(tick(m, serving("n1", 150, 430), last=silent)) == []
    # Met in between: missing again is news.
    met = tick(m, serving("n1", 150, 200), last=silent)
    assert flips(tick(m, quiet("n1"), last=met)) == []
    assert flips(tick(m, serving("n1", 150, 430), last=tick(m, quiet("n1"), last=met))) == [
        ("Warning", "SLOMissed")
    ]


def test_a_new_loop_starts_from_the_stored_condition() -> None:
    missed, _ = slo_of(chat(ttftP99Ms=300), serving("n1", 150, 420))
    assert missed is not None
    stored = {"conditions": [missed.model_dump(by_alias=True, exclude_none=True)]}
    restarted = tick(chat(stored, ttftP99Ms=300), serving("n1", 150, 480))
    assert flips(restarted) == [] and restarted.slo == {"chat": False}
