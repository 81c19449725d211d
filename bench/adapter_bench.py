"""Adapter benchmark (issue #9): adapter-aware routing against plain least-loaded routing.

Three real agents serve one LoRA base model (FP32 x[N,1024] -> y = x W + x A^T B^T, rank 64:
each adapter file holds 0.5 MB of parameters, loaded by onnxruntime's LoraAdapter) with 4
adapter slots each, and 8 adapters. Closed-loop clients spread their requests over the three
agents (as the pool's Service would) and over the 8 adapters uniformly. A small control loop
reads every agent's NodeStatus twice a second and pushes the routing table the operator would
(`core.plan.endpoint_for`, `control.converters.routing_table`). Each configuration starts fresh agents:

- least_loaded: every node carries all 8 adapters, adapter policy Ignore (local-first, then
  the least-loaded peer): LRU swaps adapters in and out of the 4 slots.
- adapter_aware: the same placement, adapter policy Affinity (loaded 1.0 > free slot 0.8 >
  must evict 0.6 > cannot 0, then least loaded).
- adapter_aware_planned: Affinity, and each node carries the adapters `adapterplan` gives it
  (4 of 8; 12 slots for 8 adapters, the spare 4 copies to the first by share).

Adapter hit rate = 1 - backend adapter loads / adapter requests, from the agents' counters
(ModelStatus.adapter_loads, adapter_requests) over the measured phase; p50/p99 are the
clients' own. `adapter_load_ms` is what loading one adapter file costs here (onnxruntime).

    uv run --frozen python bench/adapter_bench.py [--quick] [--out FILE]
"""

from __future__ import annotations

import hashlib
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import onnxruntime as ort  # noqa: E402
from agentproc import AgentProcess, start_agent  # noqa: E402
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc  # noqa: E402
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb  # noqa: E402
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402
from hatswarm_operator.api import InferencePool  # noqa: E402
from hatswarm_operator.control.converters import model_observations, routing_table  # noqa: E402
from hatswarm_operator.core.adapterplan import AdapterNode, plan_adapters  # noqa: E402
from hatswarm_operator.core.inventory import NodeState  # noqa: E402
from hatswarm_operator.core.plan import Route, endpoint_for  # noqa: E402
from onnx import TensorProto, helper, numpy_helper, save_model  # noqa: E402

OUT = ROOT / "bench" / "out"
DIM, RANK = 1024, 64
ADAPTERS = [f"tenant{i}" for i in range(8)]
NODES = ("n0", "n1", "n2")
SLOTS = 4
CLIENTS = 6
REFRESH_S = 0.5
POOL = InferencePool.model_validate(
    {"apiVersion": "hatswarm.io/v1alpha1", "kind": "InferencePool",
     "metadata": {"name": "bench"}, "spec": {"nodeSelector": {}}}
)  # fmt: skip


def build_base(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((DIM, DIM)) / np.sqrt(DIM)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["base"]),
            helper.make_node("Transpose", ["lora_A"], ["a_t"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "a_t"], ["xa"]),
            helper.make_node("Transpose", ["lora_B"], ["b_t"], perm=[1, 0]),
            helper.make_node("MatMul", ["xa", "b_t"], ["delta"]),
            helper.make_node("Add", ["base", "delta"], ["y"]),
        ],
        "lora_base",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", DIM]),
            helper.make_tensor_value_info("lora_A", TensorProto.FLOAT, [RANK, DIM]),
            helper.make_tensor_value_info("lora_B", TensorProto.FLOAT, [DIM, RANK]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", DIM])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.zeros((RANK, DIM), np.float32), "lora_A"),
            numpy_helper.from_array(np.zeros((DIM, RANK), np.float32), "lora_B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save_model(model, str(path))
    return path


def build_adapter(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(100 + seed)
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    params = {
        "lora_A": rng.standard_normal((RANK, DIM)).astype(np.float32) * 0.01,
        "lora_B": rng.standard_normal((DIM, RANK)).astype(np.float32) * 0.01,
    }
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
    fmt.export_adapter(str(path))
    return path


def adapter_load_ms(path: Path, n: int = 20) -> float:
    """Median cost of what the agent does per adapter load (read + LoraAdapter.Load)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        ort.AdapterFormat.read_adapter(str(path)).get_parameters()
        ort.LoraAdapter().Load(str(path))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def control(agent: AgentProcess) -> Any:
    return control_pb2_grpc.AgentControlStub(grpc.insecure_channel(agent.address))


def model_status(agent: AgentProcess) -> control_pb2.ModelStatus:
    models = control(agent).NodeStatus(control_pb2.NodeStatusRequest()).models
    return next(m for m in models if m.name == "lm")


class TableLoop:
    """Pushes the operator's routing table from the agents' NodeStatus every REFRESH_S."""

    def __init__(self, agents: dict[str, AgentProcess], adapter_policy: str) -> None:
        self.agents = agents
        self.adapter_policy = adapter_policy
        self.generation = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def push(self) -> None:
        endpoints = []
        for name, agent in self.agents.items():
            reply = control(agent).NodeStatus(control_pb2.NodeStatusRequest())
            obs = next(o for o in model_observations(reply) if o.name == "lm")
            endpoints.append(endpoint_for(NodeState(name, agent.address, up=True), obs, 1.0))
        table = routing_table(POOL, [Route("lm", "1", tuple(endpoints))], self.generation)
        table.policy = "LeastLoaded"
        table.adapter_policy = self.adapter_policy
        table.queue_limit, table.retries, table.timeout_ms = 64, 2, 10000
        for agent in self.agents.values():
            control(agent).SetRoutingTable(table)
        self.generation += 1

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.push()

    def __enter__(self) -> TableLoop:
        self.push()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def load(agents: list[AgentProcess], total: int, seed: int) -> list[float]:
    """CLIENTS closed-loop clients; request i goes to agent i % 3 with a random adapter."""
    stubs = [pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(a.address)) for a in agents]
    x = np.random.default_rng(seed).standard_normal((1, DIM)).astype(np.float32).tobytes()
    counter = iter(range(total))
    lock = threading.Lock()
    latencies: list[float] = []

    def worker(k: int) -> None:
        rng = random.Random(seed * 100 + k)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            req = pb.ModelInferRequest(model_name="lm", model_version="1")
            req.inputs.add(name="x", datatype="FP32", shape=[1, DIM])
            req.raw_input_contents.append(x)
            req.parameters["adapter"].string_param = rng.choice(ADAPTERS)
            start = time.perf_counter()
            stubs[i % len(stubs)].ModelInfer(req, timeout=30)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def counters(agents: list[AgentProcess]) -> tuple[int, int]:
    """(adapter requests, backend adapter loads) summed over the agents."""
    statuses = [model_status(a) for a in agents]
    return (
        sum(sum(s.adapter_requests.values()) for s in statuses),
        sum(s.adapter_loads for s in statuses),
    )


def run_config(
    files: dict[str, Path], carry: dict[str, tuple[str, ...]], policy: str, n: int, warm: int
) -> dict[str, Any]:
    agents: dict[str, AgentProcess] = {}
    try:
        for name in NODES:
            agents[name] = start_agent(["--node-name", name, "--log-level", "ERROR"])
        for name, agent in agents.items():
            req = control_pb2.LoadModelRequest(
                name="lm", version="1", uri=str(files["base"]), sha256=sha(files["base"]),
                options={"adapter_slots": str(SLOTS)},
                adapters=[
                    control_pb2.AdapterArtifact(
                        name=a, uri=f"file://{files[a]}", sha256=sha(files[a])
                    )
                    for a in carry[name]
                ],
            )  # fmt: skip
            status = control(agent).LoadModel(req)
            assert status.state == control_pb2.MODEL_STATE_READY, status.reason
        ordered = list(agents.values())
        with TableLoop(agents, policy):
            load(ordered, warm, seed=1)
            before = counters(ordered)
            latencies = load(ordered, n, seed=2)
            after = counters(ordered)
        requests, loads = after[0] - before[0], after[1] - before[1]
        served = {
            name: sum(model_status(a).adapter_requests.values()) for name, a in agents.items()
        }
    finally:
        for agent in agents.values():
            agent.stop(timeout=10)
    ms = np.asarray(latencies) * 1000
    return {
        "requests": n,
        "adapter_hit_rate": round(1 - loads / max(requests, 1), 4),
        "adapter_loads": loads,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "served_by_node": served,
        "adapters_per_node": {k: len(v) for k, v in carry.items()},
    }


def run(quick: bool = False) -> dict[str, Any]:
    d = OUT / "adapter-models"
    d.mkdir(parents=True, exist_ok=True)
    files = {"base": build_base(d / "base.onnx")}
    for i, name in enumerate(ADAPTERS):
        files[name] = build_adapter(d / f"{name}.onnx_adapter", i)
    n, warm = (600, 150) if quick else (3000, 300)
    everywhere = {name: tuple(ADAPTERS) for name in NODES}
    planned = plan_adapters(ADAPTERS, [AdapterNode(name, SLOTS) for name in NODES])
    plain = run_config(files, everywhere, "Ignore", n, warm)
    aware = run_config(files, everywhere, "Affinity", n, warm)
    placed = run_config(files, planned, "Affinity", n, warm)

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else 0.0

    return {
        "setup": {
            "agents": len(NODES),
            "adapter_slots": SLOTS,
            "adapters": len(ADAPTERS),
            "clients": CLIENTS,
            "adapter_params_mb": round(2 * RANK * DIM * 4 / 2**20, 2),
            "adapter_load_ms": round(adapter_load_ms(files[ADAPTERS[0]]), 3),
            "table_refresh_s": REFRESH_S,
            "plan": {k: list(v) for k, v in planned.items()},
        },
        "least_loaded": plain,
        "adapter_aware": aware,
        "adapter_aware_planned": placed,
        "hit_rate_aware_vs_least_loaded": ratio(
            aware["adapter_hit_rate"], plain["adapter_hit_rate"]
        ),
        "p99_aware_vs_least_loaded": ratio(aware["p99_ms"], plain["p99_ms"]),
        "hit_rate_planned_vs_least_loaded": ratio(
            placed["adapter_hit_rate"], plain["adapter_hit_rate"]
        ),
        "p99_planned_vs_least_loaded": ratio(placed["p99_ms"], plain["p99_ms"]),
        "quick": quick,
    }


def main() -> int:
    from benchcli import standalone  # bench/ is on sys.path when run as a script

    return standalone(run, OUT / "adapters.json", __doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())
