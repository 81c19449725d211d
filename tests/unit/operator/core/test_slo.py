"""A generative model's time-to-first-token target: the SLOMet condition and its Events, from
plain data (what the agents reported), no cluster."""

from __future__ import annotations

from typing import Any

import pytest
from hatswarm_operator.api import EdgeModel
from hatswarm_operator.api.common import Condition
from hatswarm_operator.api.edgemodel import GenerationStatus
from hatswarm_operator.core.inventory import GenerationObs, ModelObs, ModelState
from hatswarm_operator.core.reconcile import plan_pool
from hatswarm_operator.core.slo import slo_condition, slo_event
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


def slo_of(m: EdgeModel, *nodes: Any) -> tuple[Condition | None, list[Any]]:
    plan = plan_pool(make_pool(generation=1, nodeSelector=POOL_LABELS), [m], list(nodes), now=0)
    cond = {c.type: c for c in plan.model_status["chat"].conditions}.get("SLOMet")
    return cond, [e for e in plan.events if e.reason in ("SLOMet", "SLOMissed")]


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
    ev = slo_event("chat", [], missed)
    assert ev is not None and (ev.type, ev.reason) == ("Warning", "SLOMissed")
    assert "p99 412 ms above the target 100 ms" in ev.message
    assert slo_event("chat", [cond("False")], missed) is None  # still missed: said already
    back = slo_event("chat", [cond("False")], met)
    assert back is not None and (back.type, back.reason) == ("Normal", "SLOMet")
    assert slo_event("chat", [], met) is None  # met from the start: nothing to say
    assert slo_event("chat", [cond("True")], met) is None
    assert slo_event("chat", [cond("False")], unknown) is None  # no traffic is no verdict
    assert slo_event("chat", [cond("Unknown")], missed) is not None
    assert slo_event("chat", [], None) is None


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
