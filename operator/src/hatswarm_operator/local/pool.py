"""Local mode: the operator's control loop over local agent processes, no cluster needed.

`LocalPool` is the local adapter: the same `PoolRuntime` (probe, pure plan, converge, route,
status) the kopf operator runs, fed from manifest files instead of the Kubernetes API, with
status written to a JSON file and the terminal instead of `/status` subresources.

Secrets are files here: a pool's `secretRef {name, key}` is `<state-dir>/secrets/<name>/<key>`
(artifact public keys, `spec.auth.tokenSecretRef`), and `spec.auth.tlsSecretRef` is the
folder `<state-dir>/secrets/<name>/` holding `tls.crt`, `tls.key` and `ca.crt`. The agents
are started with those files (`--auth-token-file`, `--tls-*`) and the control loop re-reads
them every tick, so rewriting the token file rotates it for both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus
from hatswarm_operator.control import agentclient
from hatswarm_operator.control.agentclient import AgentClient, AgentCredentials
from hatswarm_operator.control.runtime import PoolRuntime
from hatswarm_operator.core.inventory import NodeState
from hatswarm_operator.core.reconcile import Event
from hatswarm_operator.local.processes import LocalAgent, NodeSpec, start_agent


def default_state_dir() -> Path:
    return Path(os.environ.get("HATSWARM_STATE_DIR", Path.home() / ".cache" / "hatswarm" / "up"))


def secret_path(state_dir: Path, name: str, key: str) -> Path:
    """The local stand-in for key `key` of Secret `name`."""
    return state_dir / "secrets" / name / key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        msg = f"{what}: {path} is missing (local mode's Secrets are files)"
        raise FileNotFoundError(msg) from err


def local_auth_args(pool: InferencePool, state_dir: Path) -> list[str]:
    """The agents' `--auth-token-file`/`--tls-*` for the pool's `spec.auth`, as local files."""
    auth = pool.spec.auth
    args: list[str] = []
    if auth.token_secret_ref is not None:
        ref = auth.token_secret_ref
        path = secret_path(state_dir, ref.name, ref.key)
        if not _read(path, "spec.auth.tokenSecretRef").strip():
            raise ValueError(f"spec.auth.tokenSecretRef: {path} is empty")
        args += ["--auth-token-file", str(path.resolve())]
    if auth.tls_secret_ref is not None:
        folder = state_dir / "secrets" / auth.tls_secret_ref.name
        files = [
            agentclient.TLS_CERT,
            agentclient.TLS_KEY,
            *([agentclient.TLS_CA] * auth.mutual_tls),
        ]
        for f in files:
            _read(folder / f, "spec.auth.tlsSecretRef")
        args += ["--tls-cert", str((folder / agentclient.TLS_CERT).resolve())]
        args += ["--tls-key", str((folder / agentclient.TLS_KEY).resolve())]
        if auth.mutual_tls:
            args += ["--tls-ca", str((folder / agentclient.TLS_CA).resolve())]
    return args


def local_credentials(pool: InferencePool, state_dir: Path) -> AgentCredentials:
    """What the local control loop presents to its agents (as the operator does in a cluster)."""
    auth = pool.spec.auth
    token = ""
    if auth.token_secret_ref is not None:
        ref = auth.token_secret_ref
        path = secret_path(state_dir, ref.name, ref.key)
        token = _read(path, "spec.auth.tokenSecretRef").decode().strip()
    if auth.tls_secret_ref is None:
        return AgentCredentials(token=token)
    folder = state_dir / "secrets" / auth.tls_secret_ref.name
    ca = folder / agentclient.TLS_CA
    return AgentCredentials(
        token=token,
        tls=True,
        ca_pem=ca.read_bytes() if ca.exists() else None,
        cert_pem=_read(folder / agentclient.TLS_CERT, "tls") if auth.mutual_tls else None,
        key_pem=_read(folder / agentclient.TLS_KEY, "tls") if auth.mutual_tls else None,
    )


class LocalSink:
    """Keeps the latest statuses and Events, and mirrors them to `status.json`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.models: dict[str, EdgeModelStatus] = {}
        self.pools: dict[str, InferencePoolStatus] = {}
        self.events: deque[tuple[float, Event]] = deque(maxlen=200)
        self.pids: dict[str, int] = {}

    async def model_status(self, namespace: str, name: str, status: EdgeModelStatus) -> None:
        self.models[name] = status
        self._write()

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None:
        self.pools[name] = status
        self._write()

    async def event(self, namespace: str, event: Event) -> None:
        self.events.append((time.time(), event))
        self._write()

    def snapshot(self) -> dict[str, Any]:
        return {
            "pools": {k: v.wire() for k, v in self.pools.items()},
            "models": {k: v.wire() for k, v in self.models.items()},
            "events": [
                {
                    "time": t,
                    "object": f"{e.kind}/{e.name}",
                    "type": e.type,
                    "reason": e.reason,
                    "message": e.message,
                }
                for t, e in self.events
            ],
            "pids": self.pids,
        }

    def _write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(tmp, self.path)


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

    async def _key(self, namespace: str, ref: str) -> str:
        """Local stand-in for a Secret: `<state-dir>/secrets/<name>/<key>`."""
        path = self.state_dir / "secrets" / ref
        return path.read_text().strip()

    async def _refresh_credentials(self) -> None:
        """Re-read the pool's credential files (a rewritten token file is a rotation)."""
        try:
            creds = local_credentials(self.pool, self.state_dir)
        except OSError:
            return  # keep the last good ones; the agents keep theirs too
        await self.client.set_credentials(creds)

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        auth_args = local_auth_args(self.pool, self.state_dir)
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
        self.runtime.set_nodes(
            [NodeState(name=a.spec.name, address=a.address, labels=dict(a.spec.labels),
                       accelerator=a.spec.accelerator) for a in self.agents.values()]
        )  # fmt: skip
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        interval = self.pool.spec.failure_detection.probe_interval_seconds
        while True:
            started = time.monotonic()
            await self._refresh_credentials()
            await self.runtime.tick(self.pool, self.models)
            self.ticks += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

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


def render(snapshot: dict[str, Any], events: int = 6) -> str:
    """A `kubectl get ipool,em` style table, plus the latest Events."""
    lines = ["NAME                     READY  NODES  MODELS  COST/1K     CLOUD/1K"]
    for name, p in sorted(snapshot["pools"].items()):
        cost = p.get("cost", {})
        per1k, cloud = cost.get("per1kUsd"), cost.get("cloudPer1kUsd")
        lines.append(
            f"inferencepool/{name:<10} {p.get('nodesReady', 0):<6} {p.get('nodesTotal', 0):<6} "
            f"{p.get('models', 0):<7} {per1k if per1k is not None else '-':<11} "
            f"{cloud if cloud is not None else '-'}"
        )
        for n in p.get("nodes", []):
            mark = "Ready" if n.get("ready") else f"NotReady ({n.get('reason', '')})"
            temp = n.get("temperatureC")
            lines.append(
                f"  node/{n['name']:<8} {n.get('accelerator', ''):<8} {mark:<28} "
                f"{','.join(n.get('models', [])) or '-':<24} "
                f"{f'{temp:.0f}C' if temp is not None else ''}"
            )
    lines.append("")
    lines.append("NAME                     READY  VERSION  PHASE        RATE     P99-MS")
    for name, m in sorted(snapshot["models"].items()):
        lines.append(
            f"edgemodel/{name:<14} {m.get('ready', '0/0'):<6} {m.get('version') or '-':<8} "
            f"{m.get('phase', ''):<12} {m.get('requestRate') or 0:<8.1f} {m.get('p99LatencyMs') or '-'}"
        )
    if events and snapshot["events"]:
        lines.append("")
        lines.append("EVENTS")
        for e in snapshot["events"][-events:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(e["time"]))
            lines.append(
                f"  {stamp} {e['type']:<7} {e['reason']:<14} {e['object']}: {e['message']}"
            )
    return "\n".join(lines)
