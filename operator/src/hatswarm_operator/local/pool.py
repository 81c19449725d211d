"""Local mode: the operator's control loop over local agent processes, no cluster needed.

`LocalPool` is the local adapter: the same `PoolRuntime` (probe, pure plan, converge, route,
status), driven by the same loop (`control.driver`) as the kopf operator's, fed from manifest
files instead of the Kubernetes API, with status written to a JSON file and the terminal
instead of `/status` subresources (`local.status`). Secrets are files (`local.secrets`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import SecretKeyRef
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.driver import drive
from hatswarm_operator.control.runtime import PoolRuntime
from hatswarm_operator.core.inventory import NodeState, memory_budget
from hatswarm_operator.local.processes import LocalAgent, NodeSpec, start_agent
from hatswarm_operator.local.secrets import (
    client_token,
    local_auth_args,
    local_credentials,
    read_secret_key,
)
from hatswarm_operator.local.status import LocalSink

log = logging.getLogger("hatswarm.local")


def default_state_dir() -> Path:
    return Path(os.environ.get("HATSWARM_STATE_DIR", Path.home() / ".cache" / "hatswarm" / "up"))


class LocalPool:
    """A whole pool on this machine: agents as processes, the control loop as a task."""

    def __init__(
        self,
        pool: InferencePool,
        models: Sequence[EdgeModel],
        nodes: Sequence[NodeSpec],
        state_dir: Path,
    ) -> None:
        self.pool = pool
        self.models = list(models)
        self.node_specs = list(nodes)
        self.state_dir = state_dir
        self.sink = LocalSink(state_dir / "status.json")
        self.client = AgentClient(
            timeout_s=max(pool.spec.failure_detection.probe_interval_seconds, 0.5)
        )
        self.runtime = PoolRuntime(self.client, self.sink, resolve_public_key=self._key)
        self.agents: dict[str, LocalAgent] = {}
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0

    async def _key(self, namespace: str, ref: SecretKeyRef) -> str:
        """An artifact's public key, from its local Secret file."""
        return read_secret_key(self.state_dir, ref)

    async def _refresh_credentials(self) -> None:
        """Re-read the pool's credential files (a rewritten token file is a rotation)."""
        try:
            creds = local_credentials(self.pool, self.state_dir)
        except (OSError, LookupError):
            return  # keep the last good ones; the agents keep theirs too
        await self.client.set_credentials(creds)

    @property
    def client_token(self) -> str:
        """The inference token clients of this pool present ('' when it serves anyone)."""
        return client_token(self.pool, self.state_dir)

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        auth_args = local_auth_args(self.pool, self.state_dir, self.models)
        await self.client.set_credentials(local_credentials(self.pool, self.state_dir))
        launch = functools.partial(start_agent, extra_args=auth_args)
        started = await asyncio.gather(
            *(asyncio.to_thread(launch, spec, self.state_dir) for spec in self.node_specs),
            return_exceptions=True,
        )
        errors = [s for s in started if isinstance(s, BaseException)]
        for s in started:
            if isinstance(s, LocalAgent):
                self.agents[s.spec.name] = s
                self.sink.pids[s.spec.name] = s.proc.pid
        if errors:
            await self.stop()
            raise RuntimeError(f"could not start the local nodes: {errors[0]}")
        reserve = self.pool.spec.placement.node_memory_reserve_mi_b
        self.runtime.set_nodes(
            [NodeState(name=a.spec.name, address=a.address, labels=dict(a.spec.labels),
                       accelerator=a.spec.accelerator,
                       memory_mib=memory_budget(a.spec.memory_mib, reserve))
             for a in self.agents.values()]
        )  # fmt: skip
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        """Tick on the probe interval (measured from each tick's start) until stopped."""
        started = time.monotonic()

        async def tick() -> None:
            nonlocal started
            started = time.monotonic()
            await self._refresh_credentials()
            await self.runtime.tick(self.pool, self.models)

        def counted(ok: bool) -> None:
            if ok:
                self.ticks += 1

        async def pause(seconds: float) -> bool:
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
            return True

        await drive(
            tick,
            interval=lambda: self.pool.spec.failure_detection.probe_interval_seconds,
            pause=pause,
            logger=log,
            on_result=counted,
        )

    def apply(self, models: Sequence[EdgeModel]) -> None:
        """Replace the model set (what `kubectl apply` would do); the loop converges."""
        self.models = list(models)

    def kill(self, node: str) -> None:
        self.agents[node].kill()

    async def wait(self, predicate: Any, within: float = 60.0) -> bool:
        """Poll the sink until `predicate(sink)` holds or `within` seconds pass."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if predicate(self.sink):
                return True
            if self._task is not None and self._task.done():
                self._task.result()
            await asyncio.sleep(0.1)
        return bool(predicate(self.sink))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.runtime.close()
        await self.client.close()
        await asyncio.gather(*(asyncio.to_thread(a.stop) for a in self.agents.values()))

    async def __aenter__(self) -> LocalPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
