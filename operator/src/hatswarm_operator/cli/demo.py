"""`hatswarm demo` (`make demo`): a pool on simulated Pi 5 + AI HAT+ nodes, end to end.

Brings up the bundled pool (secure by default: generated control and client tokens, shown to
refuse a stranger), drives load through one agent with tritonclient, shows routing shares,
kills a node under load (no request may fail) and watches its replica move, shows the
response cache, prints the cost report for the measured throughput; then a generative pool
(a tiny chat model written at run time) streams chat answers through an agent that does not
hold the model with the `openai` client, and a holder is killed under that load (no chat may
fail before its first token; one cut off after it must end with an error, never short).
Stops everything; exits non-zero when any step fails.
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
from typing import Any

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
    token: str = "",
) -> LoadResult:
    """`total` requests from `clients` threads through one agent; tritonclient, unmodified
    (`token`: the pool's inference token, sent as `authorization: Bearer`)."""
    import tritonclient.grpc as grpcclient

    headers = {"authorization": f"Bearer {token}"} if token else None

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
                    res = client.infer(model, [inp], headers=headers, client_timeout=10.0)
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
        token = local.client_token
        await show_trust_boundaries(local, name, token)

        holders = ready_nodes(local.sink, name)
        entry = next((a for a in local.agents.values() if a.spec.name not in holders), None)
        entry = entry or next(iter(local.agents.values()))
        say(f"\n== 2. load through one entry agent ({entry.spec.name}, holds the model: "
            f"{entry.spec.name in holders}); the router spreads it over the pool")  # fmt: skip
        load = await asyncio.to_thread(
            drive, entry.address, name, args.requests, 4, "load", token=token
        )
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
            drive, entry.address, name, args.requests, 4, "failover", False, kill_once, token
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
        c = await asyncio.to_thread(drive, entry.address, name, 20, 1, "cache", True, token=token)
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
    if not args.skip_generative:
        await generative_step(state_dir, args.chats)
    alive = [a.spec.name for a in local.agents.values() if a.alive()]
    if alive:
        raise DemoStepError(f"agents still running after stop: {alive}")
    say("\n== done: every step passed; every agent stopped")
    return 0


@dataclass
class ChatResult:
    complete: int = 0
    failed_before_first_token: int = 0
    broken_after_first_token: int = 0  # ended with an error event: reported, never silent
    short: int = 0  # ended cleanly with a different text: a silent truncation
    errors: Counter[str] = field(default_factory=Counter)
    nodes: Counter[str] = field(default_factory=Counter)


def stream_chat(client: Any, question: str) -> tuple[str, int, float, str]:
    """One streamed chat answer: (text, completion tokens, ms to the first piece, node)."""
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "user", "content": question}],
        max_tokens=48,
        temperature=0,
        stream=True,
    )
    node = raw.headers.get("x-hatswarm-node", "?")
    parts: list[str] = []
    first_ms = 0.0
    tokens = 0
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            if not parts:
                first_ms = (time.perf_counter() - started) * 1000
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return "".join(parts), tokens, first_ms, node


def drive_chats(
    url: str, total: int, clients: int, expected: str, during: Callable[[int], None]
) -> ChatResult:
    """`total` streamed chats from `clients` threads, each one classified by how it ended."""
    import openai

    result = ChatResult()
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        client = openai.OpenAI(base_url=url, api_key="demo", max_retries=0)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            during(i)
            got: list[str] = []
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="chat", messages=[{"role": "user", "content": "hello world"}],
                    max_tokens=48, temperature=0, stream=True,
                )  # fmt: skip
                node = raw.headers.get("x-hatswarm-node", "?")
                for chunk in raw.parse():
                    if chunk.choices and chunk.choices[0].delta.content:
                        got.append(chunk.choices[0].delta.content)
            except openai.APIError as err:
                with lock:
                    if got:
                        result.broken_after_first_token += 1
                    else:
                        result.failed_before_first_token += 1
                    result.errors[str(err)[:120]] += 1
                continue
            with lock:
                if "".join(got) == expected:
                    result.complete += 1
                    result.nodes[node] += 1
                else:
                    result.short += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result


async def generative_step(state_dir: Path, chats: int) -> None:
    try:
        import openai
    except ImportError:
        raise DemoStepError(
            "the generative step needs the openai client: pip install openai"
        ) from None
    from hatswarm_operator.local.generative import start_generative_pool

    say("\n== 6. generative edge: a tiny chat model (written now, no download) on two CPU nodes;"
        " an entry agent that holds nothing streams the answers")  # fmt: skip
    try:
        gen = await start_generative_pool(state_dir)
    except (ImportError, RuntimeError) as err:
        raise DemoStepError(f"the generative pool did not start: {err}") from None
    try:
        for a in (*gen.holders, gen.entry):
            say(
                f"  node {a.spec.name:9} agent on {a.address}, HTTP on http://127.0.0.1:{a.http_port}"
            )
        client = openai.OpenAI(base_url=gen.entry_url, api_key="demo", max_retries=0)
        text, tokens, first_ms, node = await asyncio.to_thread(stream_chat, client, "hello world")
        say(f"  openai client, {gen.entry_url}: {tokens} tokens streamed from {node}, "
            f"first after {first_ms:.1f} ms: {text!r}")  # fmt: skip
        # The node that answered: the chats below share its prompt, so affinity sends them there
        # too, and killing any other node would show no failover at all.
        victim = next((h for h in gen.holders if h.spec.name == node), gen.holders[0])
        say(f"  {chats} streamed chats from 4 clients; SIGKILL {victim.spec.name} a quarter in")

        def kill_once(i: int) -> None:
            if i == chats // 4:
                victim.kill()

        r = await asyncio.to_thread(drive_chats, gen.entry_url, chats, 4, text, kill_once)
        say(f"  {r.complete} complete (served by: {shares(r.nodes)}); "
            f"{r.failed_before_first_token} failed before their first token; "
            f"{r.broken_after_first_token} cut off after it, each ending with an error event")  # fmt: skip
        if r.failed_before_first_token or r.short:
            raise DemoStepError(
                f"{r.failed_before_first_token} chats failed before their first token, "
                f"{r.short} ended short without an error: {dict(r.errors)}"
            )
    finally:
        gen.stop()


async def show_trust_boundaries(local: LocalPool, model: str, token: str) -> None:
    """Secure by default: the control service refuses a caller without the control token
    (here: one holding the clients' inference token), inference refuses a caller without one."""
    import grpc

    from hatswarm_operator.control.agentclient import AgentClient
    from hatswarm_operator.control.credentials import AgentCredentials

    agent = next(iter(local.agents.values()))
    say(f"\n  security: tokens generated under {local.state_dir / 'secrets'} (files 0600)")
    for label, creds in (("no token", AgentCredentials()), ("the clients' token",
                         AgentCredentials(token=token))):  # fmt: skip
        stranger = AgentClient(credentials=creds)
        try:
            await stranger.status(agent.address)
        except grpc.aio.AioRpcError as err:
            say(f"  control with {label}: refused ({err.code().name})")
        else:
            raise DemoStepError(f"the control service answered a caller with {label}")
        finally:
            await stranger.close()
    unauthorised = await asyncio.to_thread(drive, agent.address, model, 1, 1, "no token")
    if unauthorised.ok or not any("UNAUTHENTICATED" in e or "Unauthenticated" in e
                                  for e in unauthorised.errors):  # fmt: skip
        raise DemoStepError(f"inference without a token was not refused: {unauthorised.errors}")
    say("  inference with no token: refused (UNAUTHENTICATED); with the clients' token: below")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hatswarm demo", description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--chats", type=int, default=80, help="streamed chats in the generative step")
    p.add_argument(
        "--skip-generative",
        action="store_true",
        help="leave out the generative step (it needs onnxruntime-genai, onnx, tokenizers, openai)",
    )
    return p


def _command(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run_demo(args))
    except DemoStepError as err:
        print(f"\nDEMO FAILED: {err}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, _command)
