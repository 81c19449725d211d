"""What the control runtime remembers about each model's rollout between ticks, and the
validation gates it runs.

The pure planner (`core.reconcile`) decides a rollout from a :class:`RolloutContext`: the
last decision (kept here for the very object, else read back from its status), the gate's
verdict for the current attempt, and the canary step's request counters since the step began.
Gates run as background tasks, one per model; a gate that could not reach its node is asked
again after `GATE_RETRY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from hatswarm_operator.api import EdgeModel
from hatswarm_operator.control.credentials import AgentCredentials
from hatswarm_operator.control.gate_runner import GateUnavailableError, run_gate
from hatswarm_operator.core.gate import gate_from_spec
from hatswarm_operator.core.inventory import NodeState
from hatswarm_operator.core.plan import PoolPlan
from hatswarm_operator.core.rollout import GateVerdict
from hatswarm_operator.core.rolloutplan import (
    Counters,
    GateRequest,
    RolloutContext,
    RolloutMemory,
    attempt_key,
    counters,
    memory_from_status,
    window_metrics,
)

log = logging.getLogger("hatswarm.loop")

GateKey = tuple[str, float | None]  # (version, when its rollout attempt began)
StepKey = tuple[str, int, float | None]  # (canary version, step, when the step began)

GATE_RETRY_SECONDS = 2.0
"""After a gate run found its node unreachable, wait this long before asking again."""


class RolloutTracker:
    """Per model: the last decided rollout state (with the object's uid), the counters when
    each canary step began, the gates' verdicts and the gate runs in flight."""

    def __init__(
        self, clock: Callable[[], float], credentials: Callable[[], AgentCredentials]
    ) -> None:
        self.clock = clock
        self.credentials = credentials
        self._rollouts: dict[str, tuple[str, RolloutMemory]] = {}
        self._windows: dict[str, tuple[StepKey, Counters]] = {}
        self._verdicts: dict[str, tuple[GateKey, GateVerdict]] = {}
        self._gate_tasks: dict[str, tuple[GateKey, asyncio.Task[None]]] = {}
        self._gate_retry: dict[str, float] = {}

    def memory(self, m: EdgeModel) -> RolloutMemory:
        """Where a model's rollout stands: what this runtime last decided for this very object,
        else what its status says (after a restart, or a model this runtime never saw)."""
        kept = self._rollouts.get(m.metadata.name)
        if kept is not None and kept[0] == m.metadata.uid:
            return kept[1]
        return memory_from_status(m.status)

    def contexts(
        self, models: Sequence[EdgeModel], nodes: Sequence[NodeState]
    ) -> dict[str, RolloutContext]:
        """What the planner needs per model: memory, the gate's verdict, the step's metrics."""
        out: dict[str, RolloutContext] = {}
        for m in models:
            name = m.metadata.name
            memory = self.memory(m)
            c = memory.canary
            gate = None
            kept = self._verdicts.get(name)
            if c is not None and kept is not None and kept[0] == (c.version, attempt_key(c)):
                gate = kept[1]
            canary_metrics = stable_metrics = None
            window = self._windows.get(name)
            if (
                c is not None
                and c.phase == "Progressing"
                and window is not None
                and window[0] == (c.version, c.step, c.started_at)
            ):
                canary_metrics = window_metrics(nodes, name, c.version, window[1])
                if memory.stable_version is not None:
                    stable_metrics = window_metrics(nodes, name, memory.stable_version, window[1])
            out[name] = RolloutContext(memory, gate, canary_metrics, stable_metrics)
        return out

    def remember(
        self, models: Sequence[EdgeModel], plan: PoolPlan, nodes: Sequence[NodeState]
    ) -> None:
        """Keep each model's new rollout state, and the counters when a canary step began."""
        names = {m.metadata.name for m in models}
        for m in models:
            name = m.metadata.name
            memory = plan.rollouts.get(name)
            if memory is None:
                continue
            self._rollouts[name] = (m.metadata.uid, memory)
            c = memory.canary
            if c is None or c.phase != "Progressing":
                self._windows.pop(name, None)
                continue
            key = (c.version, c.step, c.started_at)
            window = self._windows.get(name)
            if window is None or window[0] != key:
                self._windows[name] = (key, counters(nodes, name))
        for state in (self._rollouts, self._windows, self._verdicts, self._gate_retry):
            for name in [k for k in state if k not in names]:
                del state[name]

    def run_gates(self, models: Sequence[EdgeModel], plan: PoolPlan) -> None:
        """Start the validation gate of every version that is ready for it (once each)."""
        spec_of = {m.metadata.name: m for m in models}
        now = self.clock()
        for req in plan.gates:
            m = spec_of.get(req.model)
            if m is None:
                continue
            key: GateKey = (req.version, req.key)
            if self._verdicts.get(req.model, (None,))[0] == key:
                continue
            running = self._gate_tasks.get(req.model)
            if running is not None and not running[1].done():
                if running[0] == key:
                    continue
                running[1].cancel()  # a newer attempt supersedes it
            if self._gate_retry.get(req.model, 0.0) > now:
                continue
            if m.spec.validation is None:
                # Policy said "gate" but the spec has none any more: nothing to check.
                self._verdicts[req.model] = (key, GateVerdict(req.version, True, "no gate"))
                continue
            task = asyncio.create_task(self._gate(m, req, key))
            self._gate_tasks[req.model] = (key, task)

    async def _gate(self, m: EdgeModel, req: GateRequest, key: GateKey) -> None:
        assert m.spec.validation is not None
        gate = gate_from_spec(m.spec.validation)
        try:
            result = await run_gate(
                req.address, req.model, req.version, gate, credentials=self.credentials()
            )
        except GateUnavailableError as err:
            log.info("validation gate of %s@%s: %s", req.model, req.version, err)
            self._gate_retry[req.model] = self.clock() + GATE_RETRY_SECONDS
            return
        except Exception:  # a bug must not leave the rollout waiting silently
            log.exception("validation gate of %s@%s", req.model, req.version)
            self._gate_retry[req.model] = self.clock() + GATE_RETRY_SECONDS
            return
        log.info(
            "validation gate of %s@%s on %s: %s",
            req.model,
            req.version,
            req.node,
            "passed" if result.passed else f"failed: {result.message}",
        )
        self._verdicts[req.model] = (key, GateVerdict(req.version, result.passed, result.message))

    def tasks(self) -> list[asyncio.Task[None]]:
        """Gate runs in flight (the runtime cancels them when it closes)."""
        return [t for _, t in self._gate_tasks.values()]
