"""The chaos scenarios, shared by tests/chaos (loss and status asserted) and
bench/chaos_bench.py (the timings reported): each sets up real agent processes, runs
closed-loop load through them, breaks something and returns what the clients saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.manifests import parse_object
from hatswarm_operator.local.pool import LocalPool
from hatswarm_operator.local.processes import NodeSpec, default_nodes

from tests.agentproc import AgentProcess, start_agent
from tests.chaos.inputs import ident_request, strings_request
from tests.chaos.load import ClosedLoop, Summary
from tests.onnxmodels import build_identity

POOL_LABELS = {"hatswarm.io/pool": "chaos"}


def pool_manifests(model: Path, replicas: int = 2) -> tuple[InferencePool, EdgeModel]:
    """A pool probing every 0.5 s (3 misses: lost) and an identity model on `replicas` nodes."""
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    pool = parse_object(
        {
            "apiVersion": "hatswarm.io/v1alpha1",
            "kind": "InferencePool",
            "metadata": {"name": "chaos", "namespace": "default"},
            "spec": {
                "nodeSelector": POOL_LABELS,
                "agent": {"backend": "simulated"},
                "failureDetection": {"probeIntervalSeconds": 0.5, "failureThreshold": 3},
                "routing": {"retries": 2, "timeoutMs": 5000},
            },
        }
    )
    edge = parse_object(
        {
            "apiVersion": "hatswarm.io/v1alpha1",
            "kind": "EdgeModel",
            "metadata": {"name": "ident", "namespace": "default"},
            "spec": {
                "pool": "chaos",
                "version": "1",
                "artifacts": [
                    {
                        "accelerator": "cpu",
                        "format": "onnx",
                        "uri": model.resolve().as_uri(),
                        "sha256": digest,
                    }
                ],
                "replicas": {"min": 1, "max": replicas, "desired": replicas},
            },
        }
    )
    assert isinstance(pool, InferencePool) and isinstance(edge, EdgeModel)
    return pool, edge


def ready_nodes(pool: LocalPool, model: str = "ident") -> set[str]:
    st = pool.sink.models.get(model)
    return {p.node for p in st.placements if p.state == "Ready"} if st else set()


async def _poll(predicate: Callable[[], bool], within: float, every: float = 0.005) -> bool:
    """Wait for `predicate` checking often: "the moment it turned Ready" means within ms."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


@dataclass
class KillRound:
    """What the clients saw while two holders died one after the other."""

    summary: Summary
    killed: list[str] = field(default_factory=list)
    replaced_s: list[float] = field(default_factory=list)  # kill -> replacement Ready

    @property
    def lost(self) -> int:
        return len(self.summary.failed)


async def two_holders_killed(
    state_dir: Path, clients: int = 8, minimum: int = 600, think_s: float = 0.0
) -> KillRound:
    """A pool of four nodes plus an entry agent outside its selector (it routes, it never
    holds the model); closed-loop load through the entry; SIGKILL one holder, and the moment
    its replacement turns Ready, the other original holder."""
    model = build_identity(state_dir / "ident.onnx")
    pool, edge = pool_manifests(model)
    nodes = [*default_nodes(4, POOL_LABELS), NodeSpec("entry", "hailo8l", {})]
    async with LocalPool(pool, [edge], nodes, state_dir) as lp:
        if not await lp.wait(lambda s: len(ready_nodes(lp)) >= 2, within=120):
            raise RuntimeError("the pool never became Ready")
        entry = lp.agents["entry"].address
        load = ClosedLoop(
            entry, ident_request, clients=clients, minimum=minimum, think_s=think_s,
            token=lp.client_token,
        ).start()  # fmt: skip
        out = KillRound(Summary())
        try:
            await asyncio.to_thread(load.wait_sent, 50)
            holders = sorted(ready_nodes(lp))
            for victim in holders:
                before = ready_nodes(lp) - {victim}
                t_kill = time.monotonic()
                lp.kill(victim)
                out.killed.append(victim)
                dead = set(out.killed)
                ok = await _poll(
                    lambda dead=dead, before=before: (
                        len(ready_nodes(lp) - dead) >= 2 and bool(ready_nodes(lp) - dead - before)
                    ),
                    within=60,
                )
                if not ok:
                    raise RuntimeError(f"no replacement Ready after killing {victim}")
                out.replaced_s.append(time.monotonic() - t_kill)
            await asyncio.to_thread(load.wait_sent, load.sent + 100)
        finally:
            out.summary = await asyncio.to_thread(load.finish)
    return out


def summary_figures(summary: Summary) -> dict[str, Any]:
    return {
        "sent": summary.sent,
        "failed": len(summary.failed),
        "errors": summary.errors(),
        "p50_ms": round(summary.percentile_ms(50), 2),
        "p99_ms": round(summary.percentile_ms(99), 2),
        "max_ms": round(1000 * summary.max_seconds(), 2),
        "nodes": dict(summary.nodes),
    }


# -- agents on loopback, without the operator ----------------------------------------------


class Agents:
    """Agent processes started for one scenario, all stopped at the end."""

    def __init__(self) -> None:
        self.started: list[AgentProcess] = []

    def start(self, args: list[str], **kw: Any) -> AgentProcess:
        agent = start_agent(args, **kw)
        self.started.append(agent)
        return agent

    def __enter__(self) -> Agents:
        return self

    def __exit__(self, *exc: object) -> None:
        for agent in self.started:
            if agent.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(agent.proc.pid, signal.SIGCONT)
            agent.stop(timeout=5)


def push_table(address: str, routes: list[control_pb2.Route], generation: int, **kw: Any) -> None:
    """What the operator does: SetRoutingTable with the pool's budget and retries, every
    endpoint announced as a pool member."""
    kw.setdefault("timeout_ms", 5000)
    kw.setdefault("retries", 2)
    kw.setdefault("queue_limit", 64)
    members = {ep.address: ep.node for r in routes for ep in r.endpoints if ep.address}
    kw.setdefault(
        "members", [control_pb2.PoolMember(node=n, address=a) for a, n in members.items()]
    )
    table = control_pb2.RoutingTable(generation=generation, routes=routes, **kw)
    with grpc.insecure_channel(address) as channel:
        control_pb2_grpc.AgentControlStub(channel).SetRoutingTable(table, timeout=10)


def route(model: str, *agents: AgentProcess, names: list[str] | None = None) -> control_pb2.Route:
    nodes = names or [a.address for a in agents]
    return control_pb2.Route(
        model=model,
        endpoints=[
            control_pb2.Endpoint(node=n, address=a.address, weight=1.0)
            for n, a in zip(nodes, agents, strict=True)
        ],
    )


@dataclass
class FreezeRound:
    """A peer SIGSTOPped under load, then SIGCONTed."""

    summary: Summary
    frozen_at: float = 0.0
    resumed_at: float = 0.0
    rejoined_s: float | None = None  # SIGCONT -> its first answer through the entry

    def worst_during_freeze_s(self) -> float:
        return self.summary.max_seconds(self.frozen_at - 1.0, self.resumed_at)


def frozen_peer(model: Path, freeze_s: float = 4.0, clients: int = 8) -> FreezeRound:
    """Three agents: entry `a` (no model) routing to holders `b` and `c` by a pushed table;
    closed-loop load through `a`; `b` frozen with SIGSTOP for `freeze_s`, then resumed."""
    with Agents() as agents:
        b = agents.start(["--model", f"ident={model}", "--node-name", "b"])
        c = agents.start(["--model", f"ident={model}", "--node-name", "c"])
        a = agents.start(["--node-name", "a"])
        push_table(a.address, [route("ident", b, c, names=["b", "c"])], 1)
        load = ClosedLoop(a.address, ident_request, clients=clients).start()
        out = FreezeRound(Summary())
        try:
            load.wait_sent(200)
            out.frozen_at = time.monotonic()
            os.kill(b.proc.pid, signal.SIGSTOP)
            time.sleep(freeze_s)
            out.resumed_at = time.monotonic()
            os.kill(b.proc.pid, signal.SIGCONT)
            deadline = out.resumed_at + 30
            while time.monotonic() < deadline:
                back = [
                    o for o in list(load.summary.outcomes)
                    if o.node == "b" and o.started > out.resumed_at
                ]  # fmt: skip
                if back:
                    out.rejoined_s = min(o.started + o.seconds for o in back) - out.resumed_at
                    break
                time.sleep(0.05)
        finally:
            out.summary = load.finish()
    return out


@dataclass
class SwapRound:
    """A table swap that removes a peer with requests in flight on it."""

    summary: Summary
    swapped_at: float = 0.0
    budget_s: float = 5.0


def table_swap(model: Path, clients: int = 8, frozen: bool = False) -> SwapRound:
    """Entry `a` routes to a slow holder `b` (2.5 s a batch, simulated) and a fast `c`;
    hedging is off (`--attempt-timeout-min-ms` above the budget) so requests stay in flight
    on `b`; then a new table without `b` arrives. With `frozen`, `b` is SIGSTOPped first (its
    calls can only end by the budget or the channel closing)."""
    slow = ["--backend", "simulated", "--option", "fps_batch1=0.4", "--option", "fps_batch8=3.2"]
    with Agents() as agents:
        b = agents.start(["--model", f"ident={model}", "--node-name", "b", *slow])
        c = agents.start(["--model", f"ident={model}", "--node-name", "c"])
        a = agents.start(["--node-name", "a", "--attempt-timeout-min-ms", "60000"])
        # Round robin: half the requests go to the slow b, so many are in flight there.
        push_table(a.address, [route("ident", b, c, names=["b", "c"])], 1, policy="RoundRobin")
        load = ClosedLoop(a.address, ident_request, clients=clients).start()
        out = SwapRound(Summary())
        try:
            load.wait_sent(50)
            time.sleep(1.0)  # requests pile up on b
            if frozen:
                os.kill(b.proc.pid, signal.SIGSTOP)
                time.sleep(0.5)
            out.swapped_at = time.monotonic()
            push_table(a.address, [route("ident", c, names=["c"])], 2)
            time.sleep(out.budget_s + 2)
        finally:
            out.summary = load.finish()
    return out


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


_HEALTH_WATCH = """
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(sys.argv[1]))
every = float(sys.argv[2])
while True:
    start = time.monotonic()
    try:
        stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
        code = "OK"
    except grpc.RpcError as err:
        code = err.code().name
    print(f"{(time.monotonic() - start) * 1000:.2f} {code}", flush=True)
    time.sleep(every)
"""


class HealthWatch:
    """Checks an agent's grpc.health.v1 every `every_s` from its own process (so the test's
    own work cannot delay it) and keeps each latency."""

    def __init__(self, address: str, every_s: float = 0.02) -> None:
        self.address = address
        self.every_s = every_s
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> HealthWatch:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _HEALTH_WATCH, self.address, str(self.every_s)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        if not self._proc.stdout.readline():  # connected and answered once
            raise RuntimeError("the health watch did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        self._proc.terminate()
        for line in self._proc.stdout.read().splitlines():
            ms, _, code = line.partition(" ")
            self.latencies.append(float(ms) / 1000)
            if code != "OK":
                self.failures.append(code)
        self._proc.wait(10)

    @property
    def worst_ms(self) -> float:
        return 1000 * max(self.latencies, default=0.0)


@dataclass
class HugeRound:
    """One huge BYTES request to an agent while its health is watched."""

    code: str
    detail: str
    seconds: float
    health_worst_ms: float
    health_checks: int
    rss_before: int
    rss_peak: int
    rss_after: int

    @property
    def rss_after_vs_before(self) -> float:
        return self.rss_after / self.rss_before


def huge_bytes(model: Path, count: int = 8 << 20, item: bytes = b"") -> HugeRound:
    """An agent serving a BYTES identity model gets one request of `count` x `item` (raw)."""
    with Agents() as agents:
        agent = agents.start(["--model", f"strings={model}", "--node-name", "n"])
        with grpc.insecure_channel(
            agent.address, options=[("grpc.max_receive_message_length", 256 << 20)]
        ) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(20):  # warm: the first requests allocate what every request needs
                stub.ModelInfer(strings_request(4, b"warm"), timeout=10)
            time.sleep(0.5)
            before = rss_bytes(agent.proc.pid)
            request = strings_request(count, item)
            peak = before
            with HealthWatch(agent.address) as health:
                start = time.monotonic()
                future = stub.ModelInfer.future(request, timeout=120)
                while not future.done():
                    peak = max(peak, rss_bytes(agent.proc.pid))
                    time.sleep(0.01)
                seconds = time.monotonic() - start
                try:
                    future.result()
                    code, detail = "OK", ""
                except grpc.RpcError as err:
                    code, detail = err.code().name, err.details() or ""
                del request, future
                time.sleep(1.0)  # the health watch keeps going: "throughout"
            after = rss_bytes(agent.proc.pid)
        return HugeRound(
            code, detail, seconds, health.worst_ms, len(health.latencies), before, peak, after
        )


_BARE_SERVER = """
import asyncio, sys, grpc
from grpc_health.v1 import health, health_pb2_grpc
async def refuse(data, context):
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")
async def main():
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    method = grpc.unary_unary_rpc_method_handler(refuse)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": method}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""


def bare_grpc_floor(count: int = 8 << 20, rounds: int = 3) -> float:
    """The worst health-check latency of a bare grpc.aio server (a health servicer and a
    ModelInfer that refuses unread) while it receives the same huge request `rounds` times:
    what grpc.aio itself costs the event loop to take in the message (the floor under
    `huge_bytes`'s health figure)."""
    proc = subprocess.Popen([sys.executable, "-c", _BARE_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        address = f"127.0.0.1:{proc.stdout.readline().strip()}"
        with grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", 256 << 20)]
        ) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = strings_request(count)
            with contextlib.suppress(grpc.RpcError):  # warm: the connection's first big message
                stub.ModelInfer(request, timeout=60)
            with HealthWatch(address) as health:
                for _ in range(rounds):
                    with contextlib.suppress(grpc.RpcError):
                        stub.ModelInfer(request, timeout=60)
                    time.sleep(0.5)
        return health.worst_ms
    finally:
        proc.terminate()
        proc.wait(10)


# -- a slow artifact server --------------------------------------------------------------------


class TrickleServer:
    """An HTTP server that announces `size` bytes and sends one byte every `every_s` seconds
    (a server, or a network, that is slow without ever going silent for long)."""

    def __init__(self, size: int = 1 << 20, every_s: float = 0.5) -> None:
        trickle = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                trickle.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                try:
                    for _ in range(size):
                        if trickle.stopped.wait(every_s):
                            return
                        self.wfile.write(b"\0")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    trickle.disconnects += 1

            def log_message(self, *args: object) -> None:
                pass

        self.requests = 0
        self.disconnects = 0
        self.stopped = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/model.onnx"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TrickleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


def control(address: str) -> Any:
    return control_pb2_grpc.AgentControlStub(grpc.insecure_channel(address))


def load_in_background(
    address: str, request: control_pb2.LoadModelRequest
) -> tuple[threading.Thread, dict[str, Any]]:
    """LoadModel from a thread; the dict gets `state`/`reason`, or `code`/`detail`, and
    `seconds`."""
    result: dict[str, Any] = {}

    def call() -> None:
        start = time.monotonic()
        try:
            status = control(address).LoadModel(request, timeout=120)
            result.update(state=control_pb2.ModelState.Name(status.state), reason=status.reason)
        except grpc.RpcError as err:
            result.update(code=err.code().name, detail=err.details() or "")
        result["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, result


def cloud_recovery(model: Path, outage_s: float = 10.0) -> dict[str, Any]:
    """A gateway whose only way to serve is the cloud fallback (another agent standing in for
    the cloud); the cloud dies for `outage_s`, comes back on the same port: how long until the
    gateway's requests succeed again, and what NodeStatus counted."""
    with Agents() as agents:
        cloud = agents.start(["--model", f"ident={model}", "--node-name", "cloud"])
        port = cloud.port
        gateway = agents.start(["--gateway", "--node-name", "g"])
        cloud_route = control_pb2.Route(model="ident", cloud_fallback=True)
        fallback = control_pb2.CloudFallback(
            endpoint=cloud.address, max_share=1.0, price_per_1k_usd=0.4
        )
        push_table(gateway.address, [cloud_route], 1, cloud=fallback)
        with grpc.insecure_channel(gateway.address) as channel:
            s = pb_grpc.GRPCInferenceServiceStub(channel)
            for i in range(5):
                s.ModelInfer(ident_request(i), timeout=10)
            cloud.kill()
            down_until = time.monotonic() + outage_s
            failed_during = 0
            while time.monotonic() < down_until:  # clients keep trying through the outage
                try:
                    s.ModelInfer(ident_request(), timeout=10)
                except grpc.RpcError:
                    failed_during += 1
                time.sleep(0.1)
            agents.start(["--model", f"ident={model}", "--node-name", "cloud"], port=port)
            back = time.monotonic()
            recovered_s = None
            while time.monotonic() - back < 60:
                try:
                    s.ModelInfer(ident_request(), timeout=10)
                    recovered_s = time.monotonic() - back
                    break
                except grpc.RpcError:
                    time.sleep(0.05)
        status = control(gateway.address).NodeStatus(control_pb2.NodeStatusRequest(), timeout=10)
        return {
            "outage_s": outage_s,
            "failed_during_outage": failed_during,
            "recovered_s": recovered_s,
            "cloud_requests": dict(status.cloud_requests),
            "cloud_failures": status.cloud_failures,
        }
