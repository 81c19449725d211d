"""Routing benchmark (issue #5): the cost of a forwarding hop, balance, failover.

- hop: an empty-compute model (Identity, FP32 [1, 4]); p50 of a client calling B directly and
  through a gateway A that forwards to B, rounds interleaved; the added latency is the median
  over rounds of p50(A->B) - p50(B). For reference, the same for a minimal grpc.aio pass-through
  proxy (the floor any Python gRPC hop pays on this machine).
- balance: three simulated NPUs (5 ms per request, batch 1), one paced 3x slower
  (`--option slowdown=3`); 8 closed-loop clients through a gateway; traffic shares and p99 under
  PowerOfTwoChoices against RoundRobin.
- failover: tritonclient load (4 clients) through a gateway to three replicas; p99 steady and
  while one replica is SIGKILLed mid-run, and the requests lost (must be 0).

    uv run --frozen python bench/routing_bench.py [--quick] [--out FILE]
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "routing"))

from agentproc import AgentProcess, start_agent  # noqa: E402
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc  # noqa: E402
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb  # noqa: E402
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from onnxmodels import save_graph as _save  # noqa: E402

LOADGEN = ROOT / "tests" / "integration" / "routing" / "loadgen.py"
OUT = ROOT / "bench" / "out"

PROXY = """
import asyncio, sys, grpc
async def main():
    ch = grpc.aio.insecure_channel(sys.argv[1])
    call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    async def handler(req, ctx):
        return await call(req, metadata=(("x-hatswarm-hop", "1"),))
    s = grpc.aio.server()
    s.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelInfer": grpc.unary_unary_rpc_method_handler(handler)})])
    port = s.add_insecure_port("127.0.0.1:0")
    await s.start()
    print(port, flush=True)
    await s.wait_for_termination()
asyncio.run(main())
"""


def build_identity(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    return _save(graph, path)


def request(request_id: str = "") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="ident", id=request_id)
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(np.ones(4, np.float32).tobytes())
    return req


def stub(address: str) -> Any:
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))


def p50_ms(call: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1000)


def bench_hop(model: Path, quick: bool) -> dict[str, object]:
    rounds, n = (3, 300) if quick else (7, 1000)
    b = start_agent(["--model", f"ident={model}", "--node-name", "b"])
    a = start_agent(["--gateway", "--node-name", "a", "--peer", f"ident={b.address}"])
    proxy = subprocess.Popen(
        [sys.executable, "-c", PROXY, b.address], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proxy.stdout is not None
        proxy_addr = f"127.0.0.1:{int(proxy.stdout.readline())}"
        req = request()
        calls = {
            "direct": stub(b.address).ModelInfer,
            "via_agent": stub(a.address).ModelInfer,
            "via_proxy": stub(proxy_addr).ModelInfer,
        }
        for call in calls.values():
            for _ in range(200):
                call(req)
        per_round: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                per_round[name].append(p50_ms(lambda c=call: c(req), n))
        added = [v - d for v, d in zip(per_round["via_agent"], per_round["direct"], strict=True)]
        floor = [v - d for v, d in zip(per_round["via_proxy"], per_round["direct"], strict=True)]
        return {
            "p50_direct_ms": round(float(np.median(per_round["direct"])), 3),
            "p50_via_gateway_ms": round(float(np.median(per_round["via_agent"])), 3),
            "added_ms": round(float(np.median(added)), 3),
            "added_ms_per_round": [round(x, 3) for x in added],
            "minimal_aio_proxy_added_ms": round(float(np.median(floor)), 3),
            "target_ms": 1.0,
            "rounds": rounds,
            "requests_per_round": n,
        }
    finally:
        proxy.kill()
        a.stop()
        b.stop()


def closed_loop(address: str, clients: int, total: int) -> tuple[Counter[str], list[float], int]:
    lock = threading.Lock()
    counter = {"next": 0}
    nodes: Counter[str] = Counter()
    latencies: list[float] = []
    failed = [0]

    def worker() -> None:
        s = stub(address)
        req = request()
        while True:
            with lock:
                if counter["next"] >= total:
                    return
                counter["next"] += 1
            t = time.perf_counter()
            try:
                resp = s.ModelInfer(req, timeout=30)
            except grpc.RpcError:
                with lock:
                    failed[0] += 1
                continue
            elapsed = time.perf_counter() - t
            with lock:
                latencies.append(elapsed * 1000)
                nodes[resp.parameters["hatswarm.node"].string_param] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return nodes, latencies, failed[0]


def bench_balance(model: Path, quick: bool) -> dict[str, object]:
    total = 600 if quick else 2400
    sim = ["--backend", "simulated", "--accelerator", "hailo8l", "--max-batch-size", "1",
           "--option", "fps_batch1=200", "--option", "fps_batch8=200"]  # fmt: skip
    replicas = [
        start_agent(["--model", f"ident={model}", "--node-name", "fast1", *sim]),
        start_agent(["--model", f"ident={model}", "--node-name", "fast2", *sim]),
        start_agent(
            ["--model", f"ident={model}", "--node-name", "slow", *sim, "--option", "slowdown=3"]
        ),
    ]
    gw = start_agent(["--gateway", "--node-name", "gw"])
    try:
        ctl = control_pb2_grpc.AgentControlStub(grpc.insecure_channel(gw.address))
        out: dict[str, object] = {"requests": total, "clients": 8}
        for gen, policy in enumerate(("PowerOfTwoChoices", "RoundRobin"), start=1):
            table = control_pb2.RoutingTable(
                generation=gen, queue_limit=64, retries=2, timeout_ms=30000, policy=policy,
                routes=[control_pb2.Route(model="ident", endpoints=[
                    control_pb2.Endpoint(node=r_node, address=r.address, weight=1.0)
                    for r, r_node in zip(replicas, ("fast1", "fast2", "slow"), strict=True)
                ])],
            )  # fmt: skip
            ctl.SetRoutingTable(table)
            closed_loop(gw.address, 8, 100)  # warm up (and learn latencies)
            start = time.perf_counter()
            nodes, lat, failed = closed_loop(gw.address, 8, total)
            wall = time.perf_counter() - start
            done = sum(nodes.values())
            out[policy] = {
                "shares": {k: round(v / done, 3) for k, v in sorted(nodes.items())},
                "p50_ms": round(float(np.percentile(lat, 50)), 2),
                "p99_ms": round(float(np.percentile(lat, 99)), 2),
                "throughput_rps": round(done / wall, 1),
                "failed": failed,
            }
        return out
    finally:
        gw.stop()
        for r in replicas:
            r.stop()


def _load(address: str, total: int, kill: AgentProcess | None) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, str(LOADGEN), address, "ident", str(total), "4"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    summary: dict[str, Any] = {}
    for line in proc.stdout:
        if line.startswith("progress ") and kill is not None and int(line.split()[1]) == total // 3:
            kill.kill()
        elif line.startswith("{"):
            summary = json.loads(line)
    proc.wait(timeout=120)
    return summary


def bench_failover(model: Path, quick: bool) -> dict[str, object]:
    total = 1200 if quick else 4800
    replicas = [
        start_agent(["--model", f"ident={model}", "--node-name", name]) for name in ("b", "c", "d")
    ]
    peers = [arg for r in replicas for arg in ("--peer", f"ident={r.address}")]
    gw = start_agent(["--gateway", "--node-name", "gw", *peers])
    try:
        steady = _load(gw.address, total, None)
        killed = _load(gw.address, total, replicas[2])

        def p99(s: dict[str, Any]) -> float:
            return round(float(np.percentile(s["latencies_ms"], 99)), 2)

        return {
            "requests": total,
            "clients": 4,
            "steady_p99_ms": p99(steady),
            "during_kill_p99_ms": p99(killed),
            "during_kill_max_ms": round(max(killed["latencies_ms"]), 2),
            "lost": total - killed["ok"],
            "failed": killed["failed"],
            "errors": killed["errors"],
            "shares_steady": steady["nodes"],
            "shares_during_kill": killed["nodes"],
        }
    finally:
        gw.stop()
        for r in replicas:
            r.stop()


def run(quick: bool = False) -> dict[str, object]:
    """Run the three routing benchmarks; JSON-able results."""
    models = OUT / "models"
    models.mkdir(parents=True, exist_ok=True)
    model = build_identity(models / "ident.onnx")
    return {
        "hop": bench_hop(model, quick),
        "balance": bench_balance(model, quick),
        "failover": bench_failover(model, quick),
        "quick": quick,
    }


def main() -> int:
    from benchcli import standalone  # bench/ is on sys.path when run as a script

    return standalone(run, OUT / "routing.json", __doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())
