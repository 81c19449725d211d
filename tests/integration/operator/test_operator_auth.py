"""A pool's identities: the operator presents the control token, clients the inference token.

The test plays the kubelet: the agents behind the emulated Pods run with the files the
DaemonSet's secret volumes give them: `--control-token-file` (the pool's control Secret, here
created by the admin before the operator, which then never overwrites it) and
`--auth-token-file` (the clients' token). The real operator must read the control Secret and
present it on every control call to place the model; a caller without it, or with the
clients' token, gets refused. Then the control token rotates the way it does in a cluster (the
Secret first, the mounted file later) and the pool keeps working, with no node ever counted
lost.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import (
    control_pb2,
    control_pb2_grpc,
    grpc_predict_v2_pb2,
    grpc_predict_v2_pb2_grpc,
)
from hatswarm_operator.kube.handlers import CREDENTIALS_REFRESH_S

from tests.agentproc import AgentProcess, start_agent
from tests.integration.operator import harness
from tests.integration.operator.harness import World, model_manifest, pool_manifest, wait_for

pytestmark = pytest.mark.integration


def secret(name: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "Opaque",
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


def write_atomically(path: Path, text: str) -> None:
    """As the kubelet updates a Secret volume: the new file appears at once, never half."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def models_ready(agent: AgentProcess, token: str) -> set[str]:
    with grpc.insecure_channel(agent.address) as ch:
        resp = control_pb2_grpc.AgentControlStub(ch).NodeStatus(
            control_pb2.NodeStatusRequest(),
            timeout=5,
            metadata=(("authorization", f"Bearer {token}"),),
        )
    return {m.name for m in resp.models if m.state == control_pb2.MODEL_STATE_READY}


def ready_on(world: World, model: str, token: str) -> list[str]:
    out = []
    for node, agent in sorted(world.agents.items()):
        try:
            if model in models_ready(agent, token):
                out.append(node)
        except grpc.RpcError:
            continue
    return out


def test_operator_presents_the_control_token_and_strangers_are_refused(
    world: World, mlp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = world.tmp / "pool-token"
    token_file.write_text("client-token\n")
    control_file = world.tmp / "control-token"
    control_file.write_text("first-control\n")

    def start_with_tokens(args: Sequence[str], **kw: Any) -> AgentProcess:
        return start_agent(
            ["--auth-token-file", str(token_file), "--control-token-file", str(control_file),
             *args], **kw,
        )  # fmt: skip

    monkeypatch.setattr(harness, "start_agent", start_with_tokens)
    for node in ("pi-1", "pi-2"):
        world.add_node(node)
    world.kube.apply(secret("floor-token", "client-token"))
    world.kube.apply(secret("hatswarm-control-floor", "first-control"))
    world.kube.apply(
        pool_manifest("floor", auth={"tokenSecretRef": {"name": "floor-token"}}),
        model_manifest("mlp", mlp, replicas=2),
    )
    world.start_operator()

    # The agents the operator would run are told where the mounted tokens are.
    ds = wait_for(lambda: world.get("DaemonSet", "hatswarm-agent-floor-cpu"), what="DaemonSet")
    assert ds is not None
    spec = ds["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    assert args[args.index("--auth-token-file") + 1] == "/var/run/hatswarm/token/token"
    assert args[args.index("--control-token-file") + 1] == "/var/run/hatswarm/control/token"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["auth-token"]["secret"]["secretName"] == "floor-token"
    assert volumes["control-token"]["secret"]["secretName"] == "hatswarm-control-floor"
    # The admin's control Secret is the operator's to read, never to overwrite.
    kept = world.get("Secret", "hatswarm-control-floor")
    assert kept is not None
    assert base64.b64decode(kept["data"]["token"]).decode() == "first-control"

    # Placing the model took the control token on every control call (probe, load, routing).
    wait_for(
        lambda: len(ready_on(world, "mlp", "first-control")) == 2, timeout=60, what="2 replicas"
    )
    wait_for(lambda: world.status("EdgeModel", "mlp").get("phase") == "Ready", what="phase")
    assert world.status("InferencePool", "floor")["nodesReady"] == 2

    # Without the control token an agent refuses control (the clients' token too) and, without
    # the clients' token, inference.
    agent = world.agents["pi-1"]
    infer = grpc_predict_v2_pb2.ModelInferRequest(model_name="mlp")
    infer.inputs.add(name="x", datatype="FP32", shape=[1, 8])
    infer.raw_input_contents.append(np.ones((1, 8), np.float32).tobytes())
    client = (("authorization", "Bearer client-token"),)
    with grpc.insecure_channel(agent.address) as ch:
        control = control_pb2_grpc.AgentControlStub(ch)
        oip = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(ch)
        for md in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as err:
                control.NodeStatus(control_pb2.NodeStatusRequest(), timeout=5, metadata=md)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                oip.ModelInfer(infer, timeout=5, metadata=md)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            control.NodeStatus(control_pb2.NodeStatusRequest(), timeout=5, metadata=client)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        ok = oip.ModelInfer(infer, timeout=10, metadata=client)
        assert ok.model_name == "mlp"

    # Rotation: the Secret changes first; the kubelet refreshes the mounted file later (here
    # after the operator's refresh interval, as a kubelet's sync period is longer still).
    world.kube.apply(secret("hatswarm-control-floor", "second-control"))
    time.sleep(CREDENTIALS_REFRESH_S + 1.0)
    write_atomically(control_file, "second-control\n")
    with pytest.raises(grpc.RpcError):
        models_ready(agent, "first-control")  # the agents now take only the new token
    world.kube.apply(model_manifest("mlp2", mlp, replicas=1))
    wait_for(
        lambda: len(ready_on(world, "mlp2", "second-control")) == 1,
        timeout=60,
        what="a model placed after the rotation",
    )
    assert ready_on(world, "mlp", "second-control") == ["pi-1", "pi-2"]
    assert not world.events("floor", "NodeLost"), "a rotation must not look like a node failure"


def test_operator_generates_the_pools_tokens_when_absent(world: World, mlp: Path) -> None:
    """The default pool: the operator makes the control and clients' Secrets (owned by the
    pool) and mounts them; the agents here run without them, on loopback, so the model is
    placed by the operator all the same."""
    world.add_node("pi-1")
    world.kube.apply(pool_manifest("floor"), model_manifest("mlp", mlp, replicas=1))
    world.start_operator()
    control = wait_for(lambda: world.get("Secret", "hatswarm-control-floor"), what="control")
    clients = wait_for(lambda: world.get("Secret", "hatswarm-clients-floor"), what="clients")
    tokens = {base64.b64decode(s["data"]["token"]).decode().strip() for s in (control, clients)}
    assert len(tokens) == 2 and all(len(t) >= 40 for t in tokens)
    for s in (control, clients):
        assert s["metadata"]["ownerReferences"][0]["kind"] == "InferencePool"
    ds = wait_for(lambda: world.get("DaemonSet", "hatswarm-agent-floor-cpu"), what="DaemonSet")
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["control-token"]["secret"]["secretName"] == "hatswarm-control-floor"
    assert volumes["auth-token"]["secret"]["secretName"] == "hatswarm-clients-floor"
    wait_for(lambda: world.status("EdgeModel", "mlp").get("phase") == "Ready", what="phase")


@pytest.mark.parametrize("mtls", [False, True], ids=["token", "token+mtls"])
def test_local_mode_starts_agents_with_the_pool_credentials_and_presents_them(
    tmp_path: Path, mlp: Path, mtls: bool
) -> None:
    """`hatswarm up`'s wiring: `<state-dir>/secrets/<name>/<key>` is the Secret, on both sides.

    With mTLS the control loop dials its agents over TLS, checks them against the pool's CA
    and presents the pool's certificate, as the operator does in a cluster.
    """
    import asyncio
    import json

    from hatswarm_operator.api import EdgeModel, InferencePool
    from hatswarm_operator.api.manifests import parse_object
    from hatswarm_operator.local.pool import LocalPool
    from hatswarm_operator.local.processes import NodeSpec

    from tests.integration.routing.test_tls import make_pki

    state = tmp_path / "up"
    token = state / "secrets" / "floor-token" / "pool"
    token.parent.mkdir(parents=True)
    token.write_text("local-token\n")
    auth: dict[str, Any] = {"tokenSecretRef": {"name": "floor-token", "key": "pool"}}
    channel_creds = None
    if mtls:
        folder = state / "secrets" / "floor-tls"
        folder.mkdir()
        pki = make_pki(folder)
        pki["cert"].rename(folder / "tls.crt")
        pki["key"].rename(folder / "tls.key")
        pki["ca"].rename(folder / "ca.crt")
        auth |= {"tlsSecretRef": {"name": "floor-tls"}, "mutualTls": True}
        channel_creds = grpc.ssl_channel_credentials(
            (folder / "ca.crt").read_bytes(),
            (folder / "tls.key").read_bytes(),
            (folder / "tls.crt").read_bytes(),
        )
    # Simulated local nodes report a Hailo-8L; the model's artifact is onnx/cpu.
    manifest = pool_manifest("floor", auth=auth, accelerators=["hailo8l", "cpu"])
    pool = parse_object(manifest, "test")
    model = parse_object(model_manifest("mlp", mlp, replicas=1), "test")
    assert isinstance(pool, InferencePool) and isinstance(model, EdgeModel)
    labels = dict(pool.spec.node_selector)
    nodes = [NodeSpec("pi-1", "hailo8l", labels), NodeSpec("pi-2", "hailo8l", labels)]

    async def run() -> None:
        async with LocalPool(pool, [model], nodes, state) as local:
            assert local.client.credentials.tls is mtls
            assert await local.wait(
                lambda sink: "mlp" in sink.models and sink.models["mlp"].phase == "Ready",
                within=30,
            ), json.dumps(local.sink.snapshot(), indent=1, default=str)
            holder = local.sink.models["mlp"].placements[0].node
            other = next(a for name, a in local.agents.items() if name != holder)
            infer = grpc_predict_v2_pb2.ModelInferRequest(model_name="mlp")
            infer.inputs.add(name="x", datatype="FP32", shape=[1, 8])
            infer.raw_input_contents.append(np.ones((1, 8), np.float32).tobytes())
            channel = (
                grpc.aio.secure_channel(other.address, channel_creds)
                if channel_creds is not None
                else grpc.aio.insecure_channel(other.address)
            )
            async with channel as ch:
                oip = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await oip.ModelInfer(infer, timeout=10)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                # With the token, the agent without the model forwards it to the holder.
                resp = await oip.ModelInfer(
                    infer, timeout=10, metadata=(("authorization", "Bearer local-token"),)
                )
                assert resp.model_name == "mlp"

    asyncio.run(run())
