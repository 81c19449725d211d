"""`hatswarm demo` (`make demo`): a pool on simulated Pi 5 + AI HAT+ nodes, end to end.

Brings up the bundled pool, drives load through one agent with tritonclient, shows routing
shares, kills a node under load (no request may fail) and watches its replica move, shows the
response cache, prints the cost report for the measured throughput, and stops everything.
Exits non-zero when any step fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hatswarm_agent.protocol.wire import NODE_PARAM, ROUTE_PARAM

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.manifests import parse_object
from hatswarm_operator.cli import cost as cost_cli
from hatswarm_operator.cli.common import Parser, run
from hatswarm_operator.local.pool import LocalPool
from hatswarm_operator.local.processes import bundled_manifests, default_nodes
from hatswarm_operator.local.status import LocalSink, render

INPUT = "gpu_0/data_0"
SHAPE = (1, 3, 224, 224)


class DemoStepError(RuntimeError):
    pass


def say(text: str) -> None:
    print(text, flush=True)


def progress(done: int, total: int, failed: int, started: float, label: str) -> None:
    """A live bar on a terminal; ten lines in a log."""
    if not sys.stdout.isatty() and done % max(total // 10, 1) and done < total:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    rate = done / max(time.monotonic() - started, 1e-6)
    bar = "#" * filled + "." * (width - filled)
    end = "\n" if done >= total or not sys.stdout.isatty() else ""
    sys.stdout.write(f"\r  {label} [{bar}] {done}/{total}  {rate:6.1f} req/s  failed {failed}{end}")
    sys.stdout.flush()


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    nodes: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def drive(
    address: str,
    model: str,
    total: int,
    clients: int,
    label: str,
    same_input: bool = False,
    during: Callable[[int], None] | None = None,
) -> LoadResult:
    """`total` requests from `clients` threads through one agent; tritonclient, unmodified."""
    import tritonclient.grpc as grpcclient

    result = LoadResult()
    lock = threading.Lock()
    counter = iter(range(total))
    started = time.monotonic()
    fixed = np.full(SHAPE, 0.5, dtype=np.float32)

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        client = grpcclient.InferenceServerClient(address)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                data = fixed if same_input else rng.random(SHAPE, dtype=np.float32)
                inp = grpcclient.InferInput(INPUT, list(SHAPE), "FP32")
                inp.set_data_from_numpy(data)
                t0 = time.perf_counter()
                try:
                    res = client.infer(model, [inp], client_timeout=10.0)
                except Exception as err:  # every failure is counted and shown, none hidden
                    with lock:
                        result.failed += 1
                        result.errors[type(err).__name__ + ": " + str(err)[:120]] += 1
                else:
                    params = res.get_response().parameters
                    with lock:
                        result.ok += 1
                        result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                        node = params[NODE_PARAM].string_param if NODE_PARAM in params else "?"
                        route = params[ROUTE_PARAM].string_param if ROUTE_PARAM in params else "?"
                        result.nodes[node] += 1
                        result.routes[route] += 1
                with lock:
                    done = result.ok + result.failed
                    progress(done, total, result.failed, started, label)
                if during is not None:
                    during(i)
        finally:
            client.close()

    base = sum(map(ord, label)) * 1000  # distinct inputs per step: no accidental cache hits
    threads = [threading.Thread(target=worker, args=(base + s,)) for s in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - started
    return result


def shares(counter: Counter[str]) -> str:
    total = sum(counter.values()) or 1
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(counter.items()))


def ready(model: str, want: int) -> Callable[[LocalSink], bool]:
    def check(sink: LocalSink) -> bool:
        st = sink.models.get(model)
        return st is not None and st.ready_replicas >= want and st.phase == "Ready"

    return check


def ready_nodes(sink: LocalSink, model: str) -> set[str]:
    st = sink.models.get(model)
    return {p.node for p in st.placements if p.state == "Ready"} if st else set()


async def run_demo(args: argparse.Namespace) -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="hatswarm-demo-"))
    docs = bundled_manifests(state_dir)
    pool = parse_object(docs[0])
    model = parse_object(docs[1])
    if not isinstance(pool, InferencePool) or not isinstance(model, EdgeModel):
        raise DemoStepError("the bundled example is not a pool and a model")
    name = model.metadata.name
    nodes = default_nodes(args.nodes, pool.spec.node_selector)
    say(
        f"== 1. hatswarm up: pool '{pool.metadata.name}' on {len(nodes)} simulated Pi 5 + AI HAT+ nodes"
    )
    async with LocalPool(pool, [model], nodes, state_dir) as local:
        for a in local.agents.values():
            say(f"  node {a.spec.name:6} {a.spec.accelerator:8} agent on {a.address}")
        if not await local.wait(ready(name, model.spec.replicas.target()), within=90):
            raise DemoStepError(f"{name} did not become Ready:\n{render(local.sink.snapshot())}")
        say(render(local.sink.snapshot(), events=4))

        holders = ready_nodes(local.sink, name)
        entry = next((a for a in local.agents.values() if a.spec.name not in holders), None)
        entry = entry or next(iter(local.agents.values()))
        say(f"\n== 2. load through one entry agent ({entry.spec.name}, holds the model: "
            f"{entry.spec.name in holders}); the router spreads it over the pool")  # fmt: skip
        load = await asyncio.to_thread(drive, entry.address, name, args.requests, 4, "load")
        say(
            f"  {load.ok} ok, {load.failed} failed in {load.seconds:.1f} s; served by: {shares(load.nodes)}; routes: {shares(load.routes)}"
        )
        if load.failed:
            raise DemoStepError(f"requests failed: {dict(load.errors)}")

        victim = sorted(holders - {entry.spec.name})[0]
        say(f"\n== 3. failover: SIGKILL node {victim} while load runs; no request may be lost")
        killed: list[float] = []

        def kill_once(i: int) -> None:
            if i >= args.requests // 4 and not killed:
                killed.append(time.monotonic())
                local.kill(victim)

        fo = await asyncio.to_thread(
            drive, entry.address, name, args.requests, 4, "failover", False, kill_once
        )
        say(f"  {fo.ok} ok, {fo.failed} failed; served by: {shares(fo.nodes)}")
        if fo.failed:
            raise DemoStepError(f"requests lost during failover: {dict(fo.errors)}")
        moved = await local.wait(
            lambda s: (
                ready(name, model.spec.replicas.target())(s) and victim not in ready_nodes(s, name)
            ),
            within=60,
        )
        took = time.monotonic() - killed[0] if killed else 0.0
        if not moved:
            raise DemoStepError(f"replica was not re-placed:\n{render(local.sink.snapshot())}")
        say(f"  replica re-placed and Ready on {sorted(ready_nodes(local.sink, name))} {took:.1f} s after the kill "
            f"(Kubernetes alone: ~40 s to NotReady + 300 s to evict)")  # fmt: skip
        say(render(local.sink.snapshot(), events=6))

        say("\n== 4. response cache: the same input twice is served from the cache")
        c = await asyncio.to_thread(drive, entry.address, name, 20, 1, "cache", True)
        say(f"  routes: {shares(c.routes)}")
        if c.failed or c.routes.get("cache", 0) < 1:
            raise DemoStepError(
                f"expected cache hits, got routes {dict(c.routes)}, errors {dict(c.errors)}"
            )

        rate = load.ok / max(load.seconds, 1e-6)
        per_node = rate / max(len(holders), 1)
        say(
            f"\n== 5. cost: measured {rate:.1f} req/s over {len(holders)} serving nodes ({per_node:.1f} per node)"
        )
        code = cost_cli.main(
            [
                "--per-second",
                f"{per_node:.3f}",
                "--devices",
                str(len(local.agents)),
                "--cloud-per-1k",
                "0.40",
            ]
        )
        if code != 0:
            raise DemoStepError("hatswarm cost failed")
    alive = [a.spec.name for a in local.agents.values() if a.alive()]
    if alive:
        raise DemoStepError(f"agents still running after stop: {alive}")
    say("\n== done: every step passed; every agent stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hatswarm demo", description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--requests", type=int, default=400)
    return p


def _command(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run_demo(args))
    except DemoStepError as err:
        print(f"\nDEMO FAILED: {err}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, _command)
