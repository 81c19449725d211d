"""What the control loop feeds :func:`rollout.decide_rollout` per EdgeModel, and how a
decision's versions become placement units. Pure: plain data in, plain data out.

The state machine (`rollout`) knows nothing of the API: the spec's rollout settings and the
canary's state in status are adapted here (:func:`policy_from_spec`, :func:`canary_from_status`,
:func:`canary_to_status`).

A rollout runs two versions of one model side by side (the stable one and the canary or the
version under validation). Placement knows one model per name and at most one replica of it
per node, so each version is placed as its own unit named ``model@version``: both versions may
then share a node (memory and NPU contexts still count both) and each keeps its replicas where
they are. ``@`` cannot appear in an EdgeModel name (a DNS label), so the split is unambiguous.

The canary's health comes from the agents' request counters: what each (node, version)
reported when the current step began is kept (:func:`counters`), and the window's requests and
errors are the deltas since then (:func:`window_metrics`); a counter that went backwards (an
agent restarted or reloaded the version) counts from zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from hatswarm_operator.api import EdgeModel
from hatswarm_operator.api.edgemodel import Artifact, CanaryStatus, EdgeModelSpec, EdgeModelStatus
from hatswarm_operator.core.conditions import rfc3339
from hatswarm_operator.core.inventory import ModelState, NodeState, is_verification_failure
from hatswarm_operator.core.rollout import FAILED as FAILED_PHASES
from hatswarm_operator.core.rollout import (
    Canary,
    GateVerdict,
    RolloutDecision,
    RolloutInput,
    RolloutPolicy,
    WindowMetrics,
    decide_rollout,
)

Counters = Mapping[tuple[str, str], tuple[int, int]]
"""(node, version) -> (request_success, request_failure) of one model."""


@dataclass(frozen=True)
class RolloutMemory:
    """What the last reconcile decided for a model (``status.stableVersion``, ``.canary``,
    ``.stableArtifacts``); the runtime keeps it exactly, status keeps it across restarts."""

    stable_version: str | None = None
    canary: Canary | None = None
    stable_artifacts: tuple[Artifact, ...] = ()


@dataclass(frozen=True)
class RolloutContext:
    """Everything about a model's rollout the control loop measured: its memory, the gate's
    verdict once one was computed, and canary and stable metrics of the current step."""

    memory: RolloutMemory
    gate: GateVerdict | None = None
    canary_metrics: WindowMetrics | None = None
    stable_metrics: WindowMetrics | None = None


@dataclass(frozen=True)
class GateRequest:
    """Run the validation gate of ``model@version`` on ``node`` (its validation replica is
    ready there). ``key`` names the rollout attempt: a verdict only counts for the same one."""

    model: str
    version: str
    node: str
    address: str
    key: float | None


def policy_from_spec(spec: EdgeModelSpec) -> RolloutPolicy:
    """Adapt the API spec into a :class:`RolloutPolicy`."""
    r = spec.rollout
    return RolloutPolicy(
        strategy=r.strategy,
        canary_weight=r.canary_weight,
        steps=tuple(r.steps),
        analysis_window_seconds=float(r.analysis_window_seconds),
        max_error_rate=r.rollback.max_error_rate,
        max_p99_latency_ms=r.rollback.max_p99_latency_ms,
        gate=spec.validation is not None,
    )


def canary_from_status(c: CanaryStatus | None) -> Canary | None:
    """Adapt ``status.canary`` (``startedAt`` is RFC 3339) into a :class:`Canary`."""
    if c is None:
        return None
    started = None
    if c.started_at:
        started = datetime.fromisoformat(c.started_at.replace("Z", "+00:00")).timestamp()
    return Canary(c.version, c.phase, c.weight, c.step, started, c.message)


def canary_to_status(c: Canary | None) -> CanaryStatus | None:
    """The :class:`Canary` as ``status.canary`` (times as RFC 3339 UTC)."""
    if c is None:
        return None
    started = rfc3339(c.started_at) if c.started_at is not None else None
    return CanaryStatus(
        version=c.version,
        weight=c.weight,
        step=c.step,
        phase=c.phase,
        started_at=started,
        message=c.message,
    )


@dataclass(frozen=True)
class ModelRollout:
    """One model's rollout decision this reconcile, with the artifacts of each known version."""

    decision: RolloutDecision
    artifacts: Mapping[str, tuple[Artifact, ...]]

    def memory(self) -> RolloutMemory:
        """What the next reconcile starts from."""
        stable = self.decision.stable_version
        return RolloutMemory(
            stable_version=stable,
            canary=self.decision.canary,
            stable_artifacts=self.artifacts.get(stable, ()) if stable is not None else (),
        )

    def may_retire(self, version: str, serving: bool) -> bool:
        """May a ready replica of a version this decision no longer wants be unloaded now?

        Yes when something else serves the model, when it is the canary that just failed, or
        when the strategy unloads first (Recreate); otherwise it is the last thing serving.
        """
        c = self.decision.canary
        failed = c is not None and c.version == version and c.phase in FAILED_PHASES
        return serving or failed or self.decision.unload_first


def decide_model_rollout(
    m: EdgeModel,
    ctx: RolloutContext,
    replicas: int,
    members: Sequence[NodeState],
    now: float,
) -> ModelRollout:
    """Call :func:`rollout.decide_rollout` for one model with what the loop measured."""
    spec, name = m.spec, m.metadata.name
    memory = ctx.memory
    ready_new = sum(
        1 for n in members if (o := n.model(name, spec.version)) is not None and o.ready
    )
    gate = ctx.gate
    c = memory.canary
    if gate is None and c is not None and c.phase == "Validating":
        # An artifact the node refuses to verify never passes: that is the gate's verdict.
        for n in members:
            o = n.model(name, c.version)
            if o is not None and o.state is ModelState.FAILED and is_verification_failure(o.reason):
                gate = GateVerdict(c.version, False, f"artifact rejected on {n.name}: {o.reason}")
                break
    decision = decide_rollout(
        RolloutInput(
            version=spec.version,
            stable_version=memory.stable_version,
            canary=memory.canary,
            policy=policy_from_spec(spec),
            now=now,
            replicas=replicas,
            gate=gate,
            canary_metrics=ctx.canary_metrics,
            stable_metrics=ctx.stable_metrics,
            canary_ready=ready_new,
        )
    )
    artifacts: dict[str, tuple[Artifact, ...]] = {}
    if memory.stable_version is not None and memory.stable_artifacts:
        artifacts[memory.stable_version] = tuple(memory.stable_artifacts)
    artifacts[spec.version] = tuple(spec.artifacts)
    return ModelRollout(decision, artifacts)


def memory_from_status(status: EdgeModelStatus | None) -> RolloutMemory:
    """The rollout memory a status carries (after an operator restart, or from the API)."""
    if status is None:
        return RolloutMemory()
    return RolloutMemory(
        stable_version=status.stable_version,
        canary=canary_from_status(status.canary),
        stable_artifacts=tuple(status.stable_artifacts or ()),
    )


def unit_name(model: str, version: str) -> str:
    """The placement model of one version of an EdgeModel."""
    return f"{model}@{version}"


def split_unit(unit: str) -> tuple[str, str]:
    """``model@version`` -> (model, version)."""
    model, _, version = unit.partition("@")
    return model, version


def attempt_key(canary: Canary | None) -> float | None:
    """Identifies one rollout attempt of a version: when its current phase began."""
    return canary.started_at if canary is not None else None


def counters(nodes: Sequence[NodeState], model: str) -> dict[tuple[str, str], tuple[int, int]]:
    """Request counters of every version of ``model`` on every answering node."""
    return {
        (n.name, o.version): (o.request_success, o.request_failure)
        for n in nodes
        if n.up
        for o in n.models
        if o.name == model
    }


def window_metrics(
    nodes: Sequence[NodeState], model: str, version: str, since: Counters
) -> WindowMetrics:
    """Requests and errors of ``model@version`` since ``since``, p99 = the worst replica's."""
    requests = errors = 0
    p99: float | None = None
    for n in nodes:
        if not n.up:
            continue
        o = n.model(model, version)
        if o is None:
            continue
        ok0, bad0 = since.get((n.name, version), (0, 0))
        ok = o.request_success - ok0 if o.request_success >= ok0 else o.request_success
        bad = o.request_failure - bad0 if o.request_failure >= bad0 else o.request_failure
        requests += ok + bad
        errors += bad
        if o.ready and n.in_pool and o.p99_ms > 0:
            p99 = o.p99_ms if p99 is None else max(p99, o.p99_ms)
    return WindowMetrics(requests=requests, errors=errors, p99_ms=p99)
