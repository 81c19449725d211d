"""A simulated fleet: thousands of AgentControl endpoints served from a few processes.

The operator at fleet scale has to be measured against a thousand agents, and a thousand real
`hatswarm-agent` processes (onnxruntime each) do not fit on a 2-core machine. Here each
simulated node is its own grpc.aio server on its own loopback port (so the operator dials a
thousand distinct addresses, keeps a thousand channels and probes each), answering the four
AgentControl calls the way a real agent does:

- NodeStatus: accelerator, the loaded models with their state, the routing generation;
- LoadModel: idempotent as the real agent's (a version already READY with the same sha256
  answers at once; a second call while it loads waits for the same load), LOADING for
  `load_s` seconds, then READY;
- UnloadModel: drops the versions asked for and lists them;
- SetRoutingTable: keeps the newest generation.

No inference, no artifacts: what the operator's control loop sees of an agent, nothing more.
Every call is counted per node: `LoadModel` calls, loads actually started, and *duplicate*
loads (a call for a version that node already had READY or LOADING), so tests and the fleet
benchmark can prove a restart or a takeover reloaded nothing.

Workers are `python bench/simfleet.py --worker` processes driven over stdin/stdout (JSON
lines); :class:`SimFleet` starts them and talks to them. Kill a node (`kill`) and its server
stops (connection refused, as a powered-off Pi's address would answer after ARP gives up);
`revive` starts it again on the same port with no models, as a rebooted agent would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc

READY = control_pb2.MODEL_STATE_READY
LOADING = control_pb2.MODEL_STATE_LOADING


# --- one simulated agent ---------------------------------------------------------------------


@dataclass
class _Model:
    version: str
    sha256: str
    state: int
    loaded_at_ms: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class SimAgent(control_pb2_grpc.AgentControlServicer):
    """The control surface of one node agent, with its models kept in memory."""

    def __init__(self, name: str, accelerator: str, load_s: float, capacity_fps: float) -> None:
        self.name = name
        self.accelerator = accelerator
        self.load_s = load_s
        self.capacity_fps = capacity_fps
        self.models: dict[tuple[str, str], _Model] = {}
        self.generation = 0
        self.started = time.monotonic()
        self.counts: Counter[str] = Counter()
        self.loads: Counter[str] = Counter()  # "model@version" -> loads actually started
        self.load_started: dict[str, float] = {}  # "model@version" -> when (time.time())

    def _status(self, name: str, m: _Model) -> control_pb2.ModelStatus:
        return control_pb2.ModelStatus(
            name=name,
            version=m.version,
            state=m.state,  # type: ignore[arg-type]
            backend="simulated",
            sha256=m.sha256,
            capacity_fps=self.capacity_fps,
            loaded_at_unix_ms=m.loaded_at_ms,
        )

    async def NodeStatus(  # noqa: N802
        self, request: control_pb2.NodeStatusRequest, context: Any
    ) -> control_pb2.NodeStatusResponse:
        self.counts["NodeStatus"] += 1
        return control_pb2.NodeStatusResponse(
            node_name=self.name,
            accelerator=self.accelerator,
            agent_version="simfleet",
            models=[self._status(n, m) for (n, _), m in sorted(self.models.items())],
            temperature_c=math.nan,
            watts=math.nan,
            uptime_seconds=int(time.monotonic() - self.started),
            routing_generation=self.generation,
            now_unix_ms=int(time.time() * 1000),
        )

    async def LoadModel(  # noqa: N802
        self, request: control_pb2.LoadModelRequest, context: Any
    ) -> control_pb2.ModelStatus:
        self.counts["LoadModel"] += 1
        key = (request.name, request.version)
        m = self.models.get(key)
        if m is not None and m.sha256 == request.sha256:
            self.counts["duplicate_loads"] += 1  # already READY or LOADING here
            await m.done.wait()
            return self._status(request.name, m)
        m = self.models[key] = _Model(request.version, request.sha256, LOADING)
        self.loads[f"{request.name}@{request.version}"] += 1
        self.load_started[f"{request.name}@{request.version}"] = time.time()
        self.counts["loads"] += 1
        await asyncio.sleep(self.load_s)
        m.state, m.loaded_at_ms = READY, int(time.time() * 1000)
        m.done.set()
        return self._status(request.name, m)

    async def UnloadModel(  # noqa: N802
        self, request: control_pb2.UnloadModelRequest, context: Any
    ) -> control_pb2.UnloadModelResponse:
        self.counts["UnloadModel"] += 1
        gone = [k for k in self.models if k[0] == request.name and request.version in ("", k[1])]
        for k in gone:
            del self.models[k]
        if gone:
            self.counts["unloads"] += len(gone)
        return control_pb2.UnloadModelResponse(unloaded_versions=[v for _, v in gone])

    async def SetRoutingTable(  # noqa: N802
        self, request: control_pb2.RoutingTable, context: Any
    ) -> control_pb2.SetRoutingTableResponse:
        self.counts["SetRoutingTable"] += 1
        self.generation = max(self.generation, request.generation)
        return control_pb2.SetRoutingTableResponse(generation=self.generation)

    def report(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "loads": dict(self.loads),
            "load_started": dict(self.load_started),
            "ready": sorted(f"{n}@{v}" for (n, v), m in self.models.items() if m.state == READY),
        }


# --- a worker process: many agents, one event loop ------------------------------------------


class Worker:
    """Serves its nodes and obeys commands read from stdin, one JSON object a line."""

    def __init__(self, load_s: float, capacity_fps: float) -> None:
        self.load_s = load_s
        self.capacity_fps = capacity_fps
        self.agents: dict[str, SimAgent] = {}
        self.servers: dict[str, grpc.aio.Server] = {}
        self.ports: dict[str, int] = {}

    async def start(self, name: str, accelerator: str, port: int = 0) -> int:
        agent = SimAgent(name, accelerator, self.load_s, self.capacity_fps)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        control_pb2_grpc.add_AgentControlServicer_to_server(agent, server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        if bound == 0:
            raise RuntimeError(f"{name}: cannot bind 127.0.0.1:{port}")
        await server.start()
        self.agents[name], self.servers[name], self.ports[name] = agent, server, bound
        return bound

    async def kill(self, name: str) -> None:
        server = self.servers.pop(name, None)
        if server is not None:
            await server.stop(0)

    async def command(self, cmd: dict[str, Any]) -> Any:
        op = cmd.get("op")
        if op == "start":
            return {n: await self.start(n, a) for n, a in cmd["nodes"]}
        if op == "kill":
            for n in cmd["nodes"]:
                await self.kill(n)
            return True
        if op == "revive":
            for n in cmd["nodes"]:
                await self.kill(n)
                await self.start(n, self.agents[n].accelerator, self.ports[n])
            return True
        if op == "ready":
            wanted = set(cmd["models"])
            out: dict[str, list[str]] = {}
            for name, agent in self.agents.items():
                if name not in self.servers:
                    continue  # killed: what it holds serves nobody
                for (model, _), m in agent.models.items():
                    if model in wanted and m.state == READY:
                        out.setdefault(model, []).append(name)
            return out
        if op == "report":
            names = cmd.get("nodes") or list(self.agents)
            return {n: self.agents[n].report() for n in names if n in self.agents}
        if op == "cpu":
            t = os.times()
            return t.user + t.system
        raise ValueError(f"unknown command {op!r}")

    async def serve(self, stdin: IO[str], stdout: IO[str]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            try:
                reply = {"ok": await self.command(json.loads(line))}
            except Exception as err:  # answered, never fatal to the fleet
                reply = {"error": f"{type(err).__name__}: {err}"}
            stdout.write(json.dumps(reply) + "\n")
            stdout.flush()
        for name in list(self.servers):
            await self.kill(name)


# --- the driver: start workers, talk to them -------------------------------------------------


class _WorkerProc:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lock = threading.Lock()

    def ask(self, cmd: dict[str, Any], timeout: float = 120.0) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simfleet worker {self.proc.pid} exited ({self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"simfleet worker: {reply['error']}")
        return reply["ok"]


def accelerator_of(i: int) -> str:
    """A factory floor's mix: mostly Hailo-8L, some Hailo-8, a few CPU-only Pis."""
    return ("hailo8l", "hailo8l", "hailo8l", "hailo8", "hailo8l", "hailo8", "cpu")[i % 7]


class SimFleet:
    """`nodes` simulated agents over `processes` worker processes on 127.0.0.1."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        processes: int = 4,
        load_s: float = 0.5,
        capacity_fps: float = 200.0,
        accelerators: Sequence[str] | None = None,
    ) -> None:
        self.names = list(names)
        self.accelerators = list(accelerators or [accelerator_of(i) for i in range(len(names))])
        self.processes = max(1, min(processes, len(self.names)))
        self.load_s = load_s
        self.capacity_fps = capacity_fps
        self.ports: dict[str, int] = {}
        self._owner: dict[str, _WorkerProc] = {}
        self._workers: list[_WorkerProc] = []

    def start(self) -> SimFleet:
        env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "PYTHONUNBUFFERED": "1"}
        for _ in range(self.processes):
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker",
                 "--load-s", str(self.load_s), "--capacity-fps", str(self.capacity_fps)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            self._workers.append(_WorkerProc(proc))
        for w, worker in enumerate(self._workers):
            mine = [
                (n, a)
                for i, (n, a) in enumerate(zip(self.names, self.accelerators, strict=True))
                if i % self.processes == w
            ]
            ports = worker.ask({"op": "start", "nodes": mine})
            self.ports.update({n: int(p) for n, p in ports.items()})
            self._owner.update({n: worker for n, _ in mine})
        return self

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def kill(self, *names: str) -> None:
        for worker, group in self._groups(names):
            worker.ask({"op": "kill", "nodes": group})

    def revive(self, *names: str) -> None:
        for worker, group in self._groups(names):
            worker.ask({"op": "revive", "nodes": group})

    def report(self, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Per node: call counts, loads started per model@version (and when the last one
        started), READY versions."""
        out: dict[str, dict[str, Any]] = {}
        groups = self._groups(names) if names is not None else [(w, []) for w in self._workers]
        for worker, group in groups:
            out.update(worker.ask({"op": "report", "nodes": group}))
        return out

    def totals(self) -> Counter[str]:
        """Call counts summed over the fleet (NodeStatus, LoadModel, loads, duplicate_loads...)."""
        total: Counter[str] = Counter()
        for r in self.report().values():
            total.update(r["counts"])
        return total

    def ready_on(self, model: str) -> list[str]:
        return self.ready_nodes([model]).get(model, [])

    def ready_nodes(self, models: Iterable[str]) -> dict[str, list[str]]:
        """Live nodes holding each model READY (a cheap query: names only)."""
        out: dict[str, list[str]] = {}
        for worker in self._workers:
            for model, nodes in worker.ask({"op": "ready", "models": list(models)}).items():
                out.setdefault(model, []).extend(nodes)
        return {m: sorted(n) for m, n in out.items()}

    def cpu_seconds(self) -> float:
        """User + system CPU the worker processes used so far."""
        return sum(float(w.ask({"op": "cpu"})) for w in self._workers)

    def _groups(self, names: Iterable[str] | None) -> list[tuple[_WorkerProc, list[str]]]:
        by: dict[int, tuple[_WorkerProc, list[str]]] = {}
        for n in names or []:
            w = self._owner[n]
            by.setdefault(id(w), (w, []))[1].append(n)
        return list(by.values())

    def stop(self) -> None:
        for worker in self._workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(OSError):
                    assert worker.proc.stdin is not None
                    worker.proc.stdin.close()
        for worker in self._workers:
            try:
                worker.proc.wait(10)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        self._workers.clear()

    def __enter__(self) -> SimFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help="serve nodes; commands on stdin")
    p.add_argument("--load-s", type=float, default=0.5, help="simulated model load time")
    p.add_argument("--capacity-fps", type=float, default=200.0)
    args = p.parse_args(argv)
    if not args.worker:
        p.error("run with --worker (SimFleet starts the workers itself)")
    asyncio.run(Worker(args.load_s, args.capacity_fps).serve(sys.stdin, sys.stdout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
