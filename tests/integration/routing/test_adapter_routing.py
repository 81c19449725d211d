"""Adapter-aware routing between real agents: LoRA adapters spread over three nodes, the
routing table built the way the control loop builds it (NodeStatus -> endpoints)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_operator.api import InferencePool
from hatswarm_operator.control.converters import model_observations, routing_table
from hatswarm_operator.core.inventory import NodeState
from hatswarm_operator.core.plan import Route, endpoint_for

from tests.agentproc import AgentProcess, start_agents
from tests.onnxmodels import IN, OUT, build_lora_base, direct_run, lora_adapter

pytestmark = pytest.mark.integration

# Which adapters each node carries, and its slots.
CARRY = {"A": ("a", "b"), "B": ("b", "c"), "C": ("c", "d")}
SLOTS = {"A": 1, "B": 2, "C": 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("lora")
    out = {"base": build_lora_base(d / "base.onnx")}
    for i, name in enumerate("abcd"):
        out[name] = lora_adapter(d / f"{name}.onnx_adapter", seed=i)
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_request(files: dict[str, Path], name: str) -> control_pb2.LoadModelRequest:
    """The base model with the adapters node `name` carries, and its slots."""
    return control_pb2.LoadModelRequest(
        name="lm", version="1", uri=str(files["base"]), sha256=digest(files["base"]),
        options={"adapter_slots": str(SLOTS[name])},
        adapters=[
            control_pb2.AdapterArtifact(name=a, uri=f"file://{files[a]}", sha256=digest(files[a]))
            for a in CARRY[name]
        ],
    )  # fmt: skip


class Nodes(dict[str, AgentProcess]):
    """The three agents by node name, and the routing generation a test counts from (the
    agents keep the newest table, so each test's generations 1, 2, ... start above the last)."""

    generation_base = 0


@pytest.fixture(scope="module")
def started(files: dict[str, Path]) -> Iterator[Nodes]:
    """Three agents for the whole module (starting them is most of this suite's time)."""
    roots = ["--allow-file-root", str(files["base"].parent)]
    args = [["--node-name", name, *roots] for name in CARRY]
    nodes = Nodes(zip(CARRY, start_agents(args), strict=True))
    yield nodes
    for a in nodes.values():
        a.stop(timeout=5)


@pytest.fixture
def agents(started: Nodes, files: dict[str, Path]) -> Nodes:
    """The module's agents as freshly started ones serve: `lm` loaded anew on each (no
    resident adapter, zero adapter counters) and an empty routing table (local serving only)."""
    base = max(
        control(a).NodeStatus(control_pb2.NodeStatusRequest()).routing_generation
        for a in started.values()
    )
    started.generation_base = base + 1
    empty = routing_table(POOL, [], started.generation_base)
    for name, agent in started.items():
        control(agent).UnloadModel(control_pb2.UnloadModelRequest(name="lm"))
        control(agent).SetRoutingTable(empty)
        assert control(agent).LoadModel(load_request(files, name)).state == (
            control_pb2.MODEL_STATE_READY
        )
    return started


def control(agent: AgentProcess) -> control_pb2_grpc.AgentControlStub:
    return control_pb2_grpc.AgentControlStub(grpc.insecure_channel(agent.address))


def status(agent: AgentProcess) -> control_pb2.ModelStatus:
    models = control(agent).NodeStatus(control_pb2.NodeStatusRequest()).models
    (m,) = [m for m in models if m.name == "lm"]
    return m


POOL = InferencePool.model_validate(
    {"apiVersion": "hatswarm.io/v1alpha1", "kind": "InferencePool",
     "metadata": {"name": "p"}, "spec": {"nodeSelector": {}}}
)  # fmt: skip


def push_table(
    agents: Nodes, generation: int, adapter_policy: str = ""
) -> control_pb2.RoutingTable:
    """What the control loop pushes: endpoints from each node's NodeStatus. `generation`
    counts from the test's start (see `Nodes`)."""
    endpoints = []
    for name, agent in agents.items():
        node = NodeState(name, agent.address, up=True)
        reply = control(agent).NodeStatus(control_pb2.NodeStatusRequest())
        (obs,) = [o for o in model_observations(reply) if o.name == "lm"]
        endpoints.append(endpoint_for(node, obs, 1.0))
    table = routing_table(
        POOL, [Route("lm", "1", tuple(endpoints))], agents.generation_base + generation
    )
    table.adapter_policy = adapter_policy
    for agent in agents.values():
        control(agent).SetRoutingTable(table)
    return table


def ask(agent: AgentProcess, adapter: str, x: np.ndarray) -> pb.ModelInferResponse:
    req = pb.ModelInferRequest(model_name="lm", model_version="1")
    req.inputs.add(name="x", datatype="FP32", shape=x.shape)
    req.raw_input_contents.append(x.tobytes())
    req.parameters["adapter"].string_param = adapter
    with grpc.insecure_channel(agent.address) as ch:
        r: pb.ModelInferResponse = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10)
    return r


def node_of(r: pb.ModelInferResponse) -> str:
    return r.parameters["hatswarm.node"].string_param


def y_of(r: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(r.raw_output_contents[0], np.float32).reshape(-1, OUT)


X = np.random.default_rng(7).standard_normal((1, IN)).astype(np.float32)


def test_an_adapter_the_entry_lacks_runs_where_it_is_carried(
    agents: Nodes, files: dict[str, Path]
) -> None:
    push_table(agents, 1)
    r = ask(agents["A"], "d", X)
    assert node_of(r) == "C"
    np.testing.assert_allclose(y_of(r), direct_run(files["base"], X, files["d"]), rtol=1e-5)
    r = ask(agents["A"], "c", X)
    assert node_of(r) in ("B", "C")


def test_a_loaded_adapter_on_a_peer_beats_an_eviction_here(
    agents: Nodes,
) -> None:
    assert node_of(ask(agents["A"], "a", X)) == "A"  # a free slot here: loads it
    assert node_of(ask(agents["B"], "b", X)) == "B"
    push_table(agents, 2)  # B reports b loaded; A's one slot holds a
    for _ in range(3):
        assert node_of(ask(agents["A"], "b", X)) == "B"  # no eviction of a on A
    assert list(status(agents["A"]).resident_adapters) == ["a"]
    assert status(agents["A"]).adapter_loads == 1
    # Routing by load alone (adapter policy Ignore) serves it here and evicts a.
    push_table(agents, 3, adapter_policy="Ignore")
    assert node_of(ask(agents["A"], "b", X)) == "A"
    assert list(status(agents["A"]).resident_adapters) == ["b"]
    assert status(agents["A"]).adapter_evictions == 1
    counts = dict(status(agents["B"]).adapter_requests)
    assert counts == {"b": 4}


def test_a_peer_not_found_for_the_adapter_is_retried_elsewhere(
    agents: Nodes,
) -> None:
    table = push_table(agents, 1)
    # A stale table: it claims B has d loaded (B never had d).
    for ep in table.routes[0].endpoints:
        if ep.node == "B":
            ep.adapters.append("d")
            ep.adapters_known.append("d")
    table.generation += 1  # the test's generation 2
    control(agents["A"]).SetRoutingTable(table)
    for _ in range(3):
        assert node_of(ask(agents["A"], "d", X)) == "C"


def test_an_adapter_no_node_has_is_not_found(agents: Nodes) -> None:
    push_table(agents, 1)
    with pytest.raises(grpc.RpcError) as info:
        ask(agents["A"], "zzz", X)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "adapter 'zzz' is not known" in (info.value.details() or "")
