"""Canary rollout end to end: real agents on loopback, driven through `PoolRuntime`.

The model is y = k * x (FP32 [N, 2]); its validation gate sends x = [1, 2] and expects
[2, 4]. Version 1 (k = 2) is deployed through the gate first. A version 2 with k = 3 fails the
gate on its one validation node and is rolled back without ever being routed; a version 2 with
k = 2 (a new build) passes, takes half the traffic this test sends, and becomes stable.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from agentproc import AgentProcess, start_agents
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.runtime import PoolRuntime
from hatswarm_operator.core.inventory import NodeState
from hatswarm_operator.core.plan import ResourceEvent

from tests.onnxmodels import build_scale

pytestmark = pytest.mark.integration

NODES = ("n1", "n2", "n3")
GATE = {
    "samples": [
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}],
            "expected": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [2, 4]}],
        }
    ],
    "maxLatencyMs": 5000,
}


def artifact(path: Path) -> dict[str, str]:
    return {
        "accelerator": "cpu",
        "format": "onnx",
        "uri": path.as_uri(),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def edge_model(name: str, version: str, path: Path) -> EdgeModel:
    return EdgeModel.model_validate(
        {
            "apiVersion": "hatswarm.io/v1alpha1",
            "kind": "EdgeModel",
            "metadata": {"name": name, "generation": 1, "uid": f"uid-{name}"},
            "spec": {
                "pool": "p",
                "version": version,
                "artifacts": [artifact(path)],
                "replicas": {"min": 2, "max": 2, "desired": 2},
                "resources": {"memoryMiB": 64, "npuContexts": 0},
                "rollout": {"canaryWeight": 50, "steps": [50, 100], "analysisWindowSeconds": 1},
                "validation": GATE,
            },
        }
    )


POOL = InferencePool.model_validate(
    {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "p", "generation": 1},
        "spec": {
            "nodeSelector": {"pool": "p"},
            "accelerators": ["cpu"],
            "failureDetection": {"probeIntervalSeconds": 0.2},
        },
    }
)


@dataclass
class MemorySink:
    models: dict[str, EdgeModelStatus] = field(default_factory=dict)
    events: list[ResourceEvent] = field(default_factory=list)

    async def model_status(self, namespace: str, name: str, status: EdgeModelStatus) -> None:
        self.models[name] = status

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None:
        pass

    async def event(self, namespace: str, event: ResourceEvent) -> None:
        self.events.append(event)


class Driver:
    """Ticks the runtime every 0.2 s; records every version any routing table listed."""

    def __init__(self, agents: dict[str, AgentProcess], models: list[EdgeModel]) -> None:
        self.sink = MemorySink()
        self.client = AgentClient(timeout_s=2.0)
        self.runtime = PoolRuntime(self.client, self.sink)
        self.runtime.set_nodes(
            [
                NodeState(name=n, address=a.address, labels={"pool": "p"}, accelerator="cpu")
                for n, a in agents.items()
            ]
        )
        self.models = models
        self.routed: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            plan = await self.runtime.tick(POOL, self.models)
            self.routed |= {(r.model, r.version) for r in plan.routes}
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def status(self, name: str) -> EdgeModelStatus:
        return self.sink.models.get(name) or EdgeModelStatus()

    async def wait(self, pred: Callable[[], Any], within: float = 30.0) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._task is not None and self._task.done():
                self._task.result()
            if pred():
                return True
            await asyncio.sleep(0.05)
        return bool(pred())

    def loaded(self, name: str) -> set[tuple[str, str]]:
        """(node, version) of `name` the agents report ready."""
        return {
            (n.name, o.version)
            for n in self.runtime.nodes.values()
            for o in n.models
            if o.name == name and o.ready
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.runtime.close()
        await self.client.close()


@pytest.fixture(scope="module")
def agents(
    builds: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AgentProcess]]:
    root = tmp_path_factory.mktemp("agents")
    models = ["--allow-file-root", str(builds["v1"].parent)]  # a pool's agent.fileRoots
    args = [["--node-name", n, "--accelerator", "cpu", "--state-dir", str(root / n), *models]
            for n in NODES]  # fmt: skip
    started = dict(zip(NODES, start_agents(args), strict=True))
    yield started
    for a in started.values():
        a.stop(timeout=5)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "v1": build_scale(d / "v1.onnx", 2.0),
        "good": build_scale(d / "good.onnx", 2.0, bias=-0.0),
        "bad": build_scale(d / "bad.onnx", 3.0),
    }


@pytest.fixture
async def driver(agents: dict[str, AgentProcess]) -> AsyncIterator[Driver]:
    d = Driver(agents, [])
    try:
        yield d
    finally:
        await d.stop()


def conditions(st: EdgeModelStatus) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason or "", c.message or "") for c in st.conditions}


async def deploy_v1(d: Driver, name: str, builds: dict[str, Path]) -> None:
    d.models = [edge_model(name, "1", builds["v1"])]
    d.start()
    ok = await d.wait(
        lambda: d.status(name).stable_version == "1" and d.status(name).ready == "2/2"
    )
    assert ok, (d.status(name), d.sink.events)
    reasons = [e.reason for e in d.sink.events if e.name == name]
    assert "ValidationPassed" in reasons, reasons


async def infer(stub: Any, name: str, i: int) -> pb.ModelInferResponse:
    req = pb.ModelInferRequest(model_name=name, id=f"r{i}")
    req.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    req.raw_input_contents.append(np.array([[i, 1]], dtype=np.float32).tobytes())
    resp: pb.ModelInferResponse = await stub.ModelInfer(req, timeout=5)
    return resp


async def test_version_failing_the_gate_never_takes_traffic_and_rolls_back(
    driver: Driver, builds: dict[str, Path], agents: dict[str, AgentProcess]
) -> None:
    name = "badgate"
    await deploy_v1(driver, name, builds)
    driver.models = [edge_model(name, "2", builds["bad"])]
    rolled = await driver.wait(
        lambda: (c := driver.status(name).canary) is not None and c.phase == "RolledBack"
    )
    st = driver.status(name)
    assert rolled, (st, driver.sink.events)
    assert st.canary is not None and "validation gate failed" in (st.canary.message or "")
    assert "vs expected 4" in (st.canary.message or "")  # y[0,1] = 6, the reason is precise
    cond = conditions(st)
    assert cond["Progressing"][:2] == ("False", "RolledBack")
    assert cond["Degraded"][:2] == ("True", "RolledBack")
    assert (st.phase, st.stable_version, st.version, st.ready) == ("Degraded", "1", "1", "2/2")
    warning = [e for e in driver.sink.events if e.name == name and e.reason == "RolledBack"]
    assert warning and warning[0].type == "Warning" and "1 keeps serving" in warning[0].message

    # The canary goes, the stable version stays; nothing ever routed version 2.
    assert await driver.wait(lambda: {v for _, v in driver.loaded(name)} == {"1"})
    assert len(driver.loaded(name)) == 2
    assert (name, "2") not in driver.routed
    # and v1 answers through any agent
    async with grpc.aio.insecure_channel(agents["n3"].address) as ch:
        resp = await infer(pb_grpc.GRPCInferenceServiceStub(ch), name, 5)
    assert resp.model_version == "1"
    assert np.frombuffer(resp.raw_output_contents[0], dtype=np.float32).tolist() == [10.0, 2.0]


async def test_version_passing_the_gate_steps_up_to_stable(
    driver: Driver, builds: dict[str, Path], agents: dict[str, AgentProcess]
) -> None:
    name = "goodgate"
    await deploy_v1(driver, name, builds)
    driver.models = [edge_model(name, "2", builds["good"])]

    served: dict[str, int] = {}
    stop = asyncio.Event()

    async def traffic() -> None:
        async with grpc.aio.insecure_channel(agents["n1"].address) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            i = 0
            while not stop.is_set():
                resp = await infer(stub, name, i)
                served[resp.model_version] = served.get(resp.model_version, 0) + 1
                i += 1
                await asyncio.sleep(0.01)

    load = asyncio.create_task(traffic())
    try:
        progressed = await driver.wait(
            lambda: (c := driver.status(name).canary) is not None and c.phase == "Progressing"
        )
        assert progressed, (driver.status(name), driver.sink.events)
        done = await driver.wait(lambda: driver.status(name).stable_version == "2", within=40)
        assert done, (driver.status(name), driver.sink.events, served)
    finally:
        stop.set()
        await load

    st = driver.status(name)
    assert st.canary is not None and st.canary.phase == "Succeeded"
    reasons = [e.reason for e in driver.sink.events if e.name == name]
    for r in ("ValidationStarted", "ValidationPassed", "CanaryStarted", "RolloutSucceeded"):
        assert r in reasons, reasons
    assert "RolledBack" not in reasons
    # both versions took traffic during the 50% step, and the version split was the router's
    assert served.get("1", 0) > 0 and served.get("2", 0) > 0, served
    # the old version goes once the new one succeeded; status reports the new one ready
    assert await driver.wait(lambda: {v for _, v in driver.loaded(name)} == {"2"})
    assert await driver.wait(
        lambda: driver.status(name).ready == "2/2" and driver.status(name).phase == "Ready"
    ), driver.status(name)
    assert [a.uri for a in driver.status(name).stable_artifacts or []] == [builds["good"].as_uri()]
