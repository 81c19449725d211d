"""Attack 1 (control open by default) and 7 (what strangers learn): who may steer a pool.

Before issue 16 a default install had no auth at all, so any host on the LAN could call
`hatswarm.v1.AgentControl`; with auth on, the one token every kiosk held for inference opened
control too. Now a default install (the operator's DaemonSet for a pool with no `auth`, the
chart's pool, and `hatswarm up`) refuses every control RPC without the control identity, and a
client's inference token can infer and nothing else.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.manifests import parse_object
from hatswarm_operator.cli.demo import ready_nodes
from hatswarm_operator.kube.builders import build_daemonset
from hatswarm_operator.local.pool import LocalPool
from hatswarm_operator.local.processes import bundled_manifests, default_nodes

from tests.adversarial.conftest import bearer, code_of, control, mlp_request, oip
from tests.agentproc import AgentProcess, start_agent

pytestmark = pytest.mark.integration

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
SHA = "a" * 64


def control_calls(address: str) -> dict[str, Callable[[Any], Any]]:
    """Every AgentControl RPC, as a stranger would send it (metadata in, call out)."""
    stub = control(address)
    return {
        "NodeStatus": lambda md: stub.NodeStatus(
            control_pb2.NodeStatusRequest(), metadata=md, timeout=10
        ),
        "SetRoutingTable": lambda md: stub.SetRoutingTable(
            control_pb2.RoutingTable(generation=2**63), metadata=md, timeout=10
        ),
        "LoadModel": lambda md: stub.LoadModel(
            control_pb2.LoadModelRequest(name="x", uri="https://h.example/x.onnx", sha256=SHA),
            metadata=md,
            timeout=10,
        ),
        "UnloadModel": lambda md: stub.UnloadModel(
            control_pb2.UnloadModelRequest(name="shufflenet"), metadata=md, timeout=10
        ),
    }


def assert_control_refused(address: str, client_token: str) -> None:
    """No token, a wrong one, and the clients' own token: every control RPC refused."""
    for name, call in control_calls(address).items():
        for md in ((), bearer("wrong")):
            assert code_of(lambda: call(md)) == UNAUTHENTICATED, name  # noqa: B023
        assert code_of(lambda: call(bearer(client_token))) == PERMISSION_DENIED, name  # noqa: B023


# -- hatswarm up -------------------------------------------------------------------------------


async def test_hatswarm_up_refuses_every_control_call_without_the_control_identity(
    tmp_path: Path,
) -> None:
    import asyncio

    state = tmp_path / "up"
    pool_doc, model_doc = bundled_manifests(state)
    pool, model = parse_object(pool_doc, "bundled"), parse_object(model_doc, "bundled")
    assert isinstance(pool, InferencePool) and isinstance(model, EdgeModel)
    nodes = default_nodes(2, dict(pool.spec.node_selector))
    async with LocalPool(pool, [model], nodes, state) as local:
        assert await local.wait(lambda s: ready_nodes(s, "shufflenet"), within=90)
        holders = ready_nodes(local.sink, "shufflenet")
        holder = next(a for a in local.agents.values() if a.spec.name in holders)
        first = control_calls(holder.address)["NodeStatus"]
        code = await asyncio.to_thread(code_of, lambda: first(()))
        assert code == UNAUTHENTICATED  # before issue 16: OK, to anyone on the LAN
        client = local.client_token
        assert client, "hatswarm up generates the clients' token"
        await asyncio.to_thread(assert_control_refused, holder.address, client)
        # The clients' token infers (and nothing else); no token does not.
        req = mlp_request("shufflenet")
        req.inputs[0].name = "gpu_0/data_0"
        req.inputs[0].shape[:] = [1, 3, 224, 224]
        req.raw_input_contents[0] = b"\0" * (3 * 224 * 224 * 4)
        stub = oip(holder.address)
        assert await asyncio.to_thread(code_of, lambda: stub.ModelInfer(req, timeout=30)) == (
            UNAUTHENTICATED
        )
        ok = await asyncio.to_thread(
            lambda: stub.ModelInfer(req, metadata=bearer(client), timeout=30)
        )
        assert ok.model_name == "shufflenet"
        assert ready_nodes(local.sink, "shufflenet") == holders  # nothing a stranger did stuck


# -- a cluster: what the operator's DaemonSet runs -----------------------------------------------


def run_like_the_kubelet(
    pool: InferencePool, secrets: dict[str, dict[str, bytes]], tmp: Path
) -> tuple[AgentProcess, dict[str, Path]]:
    """Start the agent container the operator builds for `pool`, as a kubelet would: its
    Secret volumes as folders (a Secret the operator generates, when absent from `secrets`,
    gets a fresh token), its args with the mount paths mapped onto them."""
    ds = build_daemonset(pool)
    spec = ds["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    folders: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        folder = tmp / "volumes" / mount["name"]
        folder.mkdir(parents=True)
        if "secret" in volume:
            source = volume["secret"]
            data = secrets.setdefault(  # what the operator generates when absent
                source["secretName"], {"token": os.urandom(24).hex().encode() + b"\n"}
            )
            keys = [i["key"] for i in source.get("items", [])] or list(data)
            for key in keys:
                (folder / key).write_bytes(data[key])
        folders[mount["mountPath"]] = folder
    args: list[str] = []
    values = {
        "--host": "127.0.0.1", "--port": "0", "--node-name": "pi-1",
        "--metrics-port": "0", "--backend": "simulated",
    }  # fmt: skip
    raw = container["args"]
    for i, arg in enumerate(raw):
        if i and raw[i - 1] in values:
            args.append(values[raw[i - 1]])
            continue
        for path, folder in folders.items():
            if arg.startswith(path + "/") or arg == path:
                arg = str(folder) + arg[len(path) :]
            elif "=" in arg and arg.split("=", 1)[1].startswith(path + "/"):
                name, value = arg.split("=", 1)
                arg = f"{name}={folder}{value[len(path) :]}"
        args.append(arg)
    return start_agent(args), folders


def _token(folders: dict[str, Path], mount: str) -> str:
    return (folders[mount] / "token").read_text().splitlines()[0].strip()


def check_default_install(
    pool: InferencePool, secrets: dict[str, dict[str, bytes]], tmp: Path
) -> None:
    agent, folders = run_like_the_kubelet(pool, secrets, tmp)
    try:
        assert code_of(lambda: control_calls(agent.address)["NodeStatus"](())) == UNAUTHENTICATED
        client = _token(folders, "/var/run/hatswarm/token")
        operator = _token(folders, "/var/run/hatswarm/control")
        assert client != operator
        assert_control_refused(agent.address, client)
        assert code_of(lambda: control_calls(agent.address)["NodeStatus"](bearer(operator))) == (
            grpc.StatusCode.OK
        )
        stub = oip(agent.address)
        assert code_of(lambda: stub.ModelInfer(mlp_request(), timeout=10)) == UNAUTHENTICATED
        # With the clients' token the call is let in (and finds no such model).
        assert (
            code_of(lambda: stub.ModelInfer(mlp_request(), metadata=bearer(client), timeout=10))
            == grpc.StatusCode.NOT_FOUND
        )
    finally:
        agent.stop()


def test_a_default_pool_refuses_control_to_strangers(tmp_path: Path) -> None:
    """A pool with no `auth` at all, as most users apply it."""
    pool = InferencePool.model_validate(
        {
            "apiVersion": "hatswarm.io/v1alpha1",
            "kind": "InferencePool",
            "metadata": {"name": "floor-1", "namespace": "default"},
            "spec": {"nodeSelector": {"hatswarm.io/pool": "floor-1"},
                     "agent": {"backend": "simulated"}},
        }
    )  # fmt: skip
    check_default_install(pool, {}, tmp_path)


def test_the_charts_default_pool_refuses_control_to_strangers(tmp_path: Path) -> None:
    from tests.unit.chart.conftest import CHART, tool

    helm = tool("helm", env="HELM", fetch="helm")
    if helm is None:
        pytest.skip("helm: no binary ($HELM, PATH, or tools/fetch_tools.py)")
    import subprocess

    rendered = subprocess.run(
        [helm, "template", "t", str(CHART), "--namespace", "default",
         "--set", "pool.enabled=true", "--set", "agentDefaults.backend=simulated"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    objs = [d for d in yaml.safe_load_all(rendered) if d]
    (doc,) = [o for o in objs if o["kind"] == "InferencePool"]
    secrets = {
        o["metadata"]["name"]: {k: base64.b64decode(v) for k, v in o["data"].items()}
        for o in objs
        if o["kind"] == "Secret"
    }
    pool = parse_object(doc, "chart")
    assert isinstance(pool, InferencePool)
    check_default_install(pool, secrets, tmp_path)


# -- attack 7: what a stranger learns ----------------------------------------------------------


def test_strangers_cannot_tell_which_models_exist(tmp_path: Path, mlp: Path) -> None:
    token = tmp_path / "clients"
    token.write_text("kiosk-token\n")
    with start_agent(["--model", f"mlp={mlp}", "--auth-token-file", str(token)]) as agent:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(agent.address))

        def check(service: str, md: Any = ()) -> Any:
            return health.Check(health_pb2.HealthCheckRequest(service=service), metadata=md)

        # Known and unknown names look the same to a stranger ...
        assert code_of(lambda: check("mlp")) == UNAUTHENTICATED
        assert code_of(lambda: check("no-such-model")) == UNAUTHENTICATED
        # ... while the kubelet's probe (the server's own status) stays open.
        assert check("").status == health_pb2.HealthCheckResponse.SERVING
        assert check("mlp", bearer("kiosk-token")).status == health_pb2.HealthCheckResponse.SERVING
        assert code_of(lambda: check("nope", bearer("kiosk-token"))) == grpc.StatusCode.NOT_FOUND


def test_reflection_does_not_advertise_control_to_strangers(tmp_path: Path) -> None:
    (tmp_path / "clients").write_text("kiosk\n")
    (tmp_path / "control").write_text("operator\n")
    with start_agent(
        ["--auth-token-file", str(tmp_path / "clients"),
         "--control-token-file", str(tmp_path / "control")]
    ) as agent:  # fmt: skip
        stub = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(agent.address))
        (reply,) = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
        names = {s.name for s in reply.list_services_response.service}
        assert "inference.GRPCInferenceService" in names
        assert "hatswarm.v1.AgentControl" not in names
