"""hatswarm on a real (kind) cluster: install, serve, fail over, uninstall.

Runs only where `kind` and a container engine (docker or podman) work: on a hosted CI runner
(.github/workflows/e2e-kind.yaml) or a laptop, through `make e2e-kind`. Elsewhere every test
skips with the reason. The flow, one test per step, in order (they share one cluster):

1. a kind cluster with three workers labelled as Pi 5 + AI HAT+ nodes (kind-config.yaml);
2. the images built by images/build.sh are loaded into it, the chart is installed;
3. a pool on the labelled workers (simulated NPU) and an EdgeModel served from an in-cluster
   HTTP artifact store; an agent runs on each labelled worker and is Ready;
4. inference with tritonclient through the pool's Service (kubectl port-forward);
5. an agent pod is deleted and a node is drained: the model stays served, replicas move;
6. helm uninstall leaves nothing of the release behind.

Environment: HATSWARM_E2E_KEEP=1 keeps the cluster afterwards; HATSWARM_E2E_REUSE=1 uses a
running cluster of the same name; HATSWARM_E2E_SKIP_BUILD=1 trusts the images to exist.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLUSTER = "hatswarm-e2e"
NAMESPACE = "hatswarm-e2e"
RELEASE = "hatswarm"
VERSION = "0.1.0"
OPERATOR_IMAGE = f"ghcr.io/hatswarm/operator:{VERSION}"
AGENT_IMAGE = f"ghcr.io/hatswarm/agent:{VERSION}"
POOL_WORKERS = 3


def _engine() -> str | None:
    """docker or podman, if one answers."""
    for exe in ("docker", "podman"):
        path = shutil.which(exe)
        if path and subprocess.run([path, "info"], capture_output=True).returncode == 0:
            return exe
    return None


def _missing() -> str | None:
    if shutil.which("kind") is None:
        return "kind is not installed (https://kind.sigs.k8s.io; the CI workflow installs it)"
    if _engine() is None:
        return "no container engine: docker or podman must be installed and running"
    return None


# --- helpers ---------------------------------------------------------------------------------


def run(*cmd: str, check: bool = True, timeout: float = 600, **kw: Any) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def kubectl_bin() -> str:
    here = Path(sys.executable).parent / "kubectl"
    return str(here) if here.exists() else (shutil.which("kubectl") or "kubectl")


def helm_bin() -> str:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    out = run(sys.executable, str(ROOT / "tools" / "fetch_tools.py"), "helm")
    return out.strip()


def kubectl(*args: str, check: bool = True, timeout: float = 300) -> str:
    return run(kubectl_bin(), "--context", f"kind-{CLUSTER}", *args, check=check, timeout=timeout)


def kjson(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json"))


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 240, every: float = 2) -> Any:
    """Poll `probe` until it returns something truthy (bounded; the last error is reported)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (AssertionError, subprocess.SubprocessError, OSError, ValueError) as err:
            last = err
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def port_forward(target: str, remote: int) -> Iterator[int]:
    """kubectl port-forward to 127.0.0.1 (loopback only); yields the local port."""
    port = free_port()
    proc = subprocess.Popen(
        [kubectl_bin(), "--context", f"kind-{CLUSTER}", "-n", NAMESPACE, "port-forward",
         "--address", "127.0.0.1", target, f"{port}:{remote}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(f"port-forward {target}", lambda: _connects(port), timeout=30, every=0.5)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _connects(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def adder_model(path: Path) -> str:
    """A tiny real ONNX model (y = x + 1, FP32 [1, 4]); returns its sha256."""
    import onnx
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.FLOAT, [1, 4], [1.0] * 4)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def client_token() -> str:
    """The clients' inference token the operator generated for the pool (secure by default)."""
    secret = kjson("-n", NAMESPACE, "get", "secret", "hatswarm-clients-floor-1")
    return base64.b64decode(secret["data"]["token"]).decode().strip()


def infer(port: int) -> list[float]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    headers = {"authorization": f"Bearer {client_token()}"}
    try:
        x = grpcclient.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.array([[0.0, 1.0, 2.0, 3.0]], dtype=np.float32))
        result = client.infer("adder", [x], headers=headers, client_timeout=10)
        return [float(v) for v in result.as_numpy("y").ravel()]
    finally:
        client.close()


def agent_pods() -> list[dict[str, Any]]:
    pods = kjson("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=hatswarm-agent")
    items: list[dict[str, Any]] = pods["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def model_status() -> dict[str, Any]:
    status: dict[str, Any] = kjson("-n", NAMESPACE, "get", "edgemodel", "adder").get("status", {})
    return status


def ready_nodes() -> set[str]:
    return {p["node"] for p in model_status().get("placements", []) if p["state"] == "Ready"}


# --- the flow --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    existing = run("kind", "get", "clusters", check=False).split()
    reuse = os.environ.get("HATSWARM_E2E_REUSE") == "1" and CLUSTER in existing
    if not reuse:
        if CLUSTER in existing:
            run("kind", "delete", "cluster", "--name", CLUSTER)
        run("kind", "create", "cluster", "--config", str(HERE / "kind-config.yaml"),
            "--wait", "180s", timeout=900)  # fmt: skip
    try:
        yield CLUSTER
    finally:
        if os.environ.get("HATSWARM_E2E_KEEP") != "1" and not reuse:
            run("kind", "delete", "cluster", "--name", CLUSTER, check=False)


@pytest.fixture(scope="module")
def installed(cluster: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    engine = _engine()
    assert engine is not None
    if os.environ.get("HATSWARM_E2E_SKIP_BUILD") != "1":
        run(str(ROOT / "images" / "build.sh"), timeout=1800)
    for image in (OPERATOR_IMAGE, AGENT_IMAGE):
        if engine == "docker":
            run("kind", "load", "docker-image", image, "--name", cluster, timeout=900)
        else:  # podman: through an archive
            archive = tmp_path_factory.mktemp("img") / "image.tar"
            run("podman", "save", "-o", str(archive), image, timeout=900)
            run("kind", "load", "image-archive", str(archive), "--name", cluster, timeout=900)
    helm = helm_bin()
    run(helm, "--kube-context", f"kind-{cluster}", "upgrade", "--install", RELEASE,
        str(ROOT / "charts" / "hatswarm"), "--namespace", NAMESPACE, "--create-namespace",
        "-f", str(HERE / "values-kind.yaml"), "--wait", "--timeout", "5m", timeout=400)  # fmt: skip
    return helm


def test_operator_is_up_with_one_active_peer(installed: str) -> None:
    deploy = kjson("-n", NAMESPACE, "get", "deploy", f"{RELEASE}-operator")
    assert deploy["status"].get("readyReplicas") == 2
    peering = wait_for(
        "both replicas in the peering",
        lambda: len(kjson("get", "clusterkopfpeering", "hatswarm").get("status") or {}) >= 2,
    )
    assert peering


def test_agents_run_on_the_labelled_workers(
    installed: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = tmp_path_factory.mktemp("models")
    digest = adder_model(models / "adder.onnx")
    kubectl("-n", NAMESPACE, "create", "configmap", "e2e-models",
            f"--from-file=adder.onnx={models / 'adder.onnx'}")  # fmt: skip
    objects = (HERE / "e2e-objects.yaml").read_text()
    objects = objects.replace("__IMAGE__", AGENT_IMAGE).replace("__AGENT_IMAGE__", AGENT_IMAGE)
    applied = models / "objects.yaml"
    applied.write_text(objects.replace("__SHA256__", digest))
    kubectl("apply", "-f", str(applied))

    def agents_ready() -> list[dict[str, Any]] | None:
        pods = agent_pods()
        return pods if len(pods) == POOL_WORKERS and all(ready(p) for p in pods) else None

    pods = wait_for("an agent Ready on each labelled worker", agents_ready, timeout=300)
    workers = {
        n["metadata"]["name"]
        for n in kjson("get", "nodes", "-l", "hatswarm.io/pool=floor-1")["items"]
    }
    assert {p["spec"]["nodeName"] for p in pods} == workers
    for pod in pods:  # the restricted profile, as the chart promises
        sc = pod["spec"]["containers"][0]["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    wait_for("2 ready replicas of adder", lambda: len(ready_nodes()) >= 2, timeout=300)


def test_inference_through_the_pool_service(installed: str) -> None:
    with port_forward("svc/floor-1", 8001) as port:
        assert wait_for("an answer", lambda: infer(port), timeout=60) == [1.0, 2.0, 3.0, 4.0]
        for _ in range(20):
            assert infer(port) == [1.0, 2.0, 3.0, 4.0]


def test_failover_when_an_agent_pod_dies(installed: str) -> None:
    victim_node = sorted(ready_nodes())[0]
    victim = next(p for p in agent_pods() if p["spec"]["nodeName"] == victim_node)
    kubectl("-n", NAMESPACE, "delete", "pod", victim["metadata"]["name"], "--wait=false")
    with port_forward("svc/floor-1", 8001) as port:
        # served throughout: retries route around the lost replica
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert wait_for("an answer", lambda: infer(port), timeout=15, every=0.5)
            time.sleep(0.5)
    wait_for("2 ready replicas again", lambda: len(ready_nodes()) >= 2, timeout=300)


def test_drained_node_loses_its_replica(installed: str) -> None:
    node = sorted(ready_nodes())[0]
    kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s",
            timeout=180)  # fmt: skip
    try:
        wait_for(
            f"adder off the drained {node}, 2 replicas elsewhere",
            lambda: node not in ready_nodes() and len(ready_nodes()) >= 2,
            timeout=300,
        )
        with port_forward("svc/floor-1", 8001) as port:
            assert wait_for("an answer", lambda: infer(port), timeout=60) == [1.0, 2.0, 3.0, 4.0]
    finally:
        kubectl("uncordon", node)


def test_uninstall_is_clean(installed: str) -> None:
    kubectl("-n", NAMESPACE, "delete", "edgemodel", "adder", "--wait=true", "--timeout=120s")
    kubectl("-n", NAMESPACE, "delete", "inferencepool", "floor-1", "--wait=true", "--timeout=120s")
    wait_for("agents gone", lambda: agent_pods() == [], timeout=180)
    run(installed, "--kube-context", f"kind-{CLUSTER}", "uninstall", RELEASE,
        "--namespace", NAMESPACE, "--wait", "--timeout", "3m", timeout=240)  # fmt: skip
    left = kubectl(
        "get", "all,configmap,secret,networkpolicy,pdb,serviceaccount,role,rolebinding",
        "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name",
    )  # fmt: skip
    assert left.strip() == ""
    cluster_left = kubectl(
        "get", "clusterrole,clusterrolebinding", "-l", f"app.kubernetes.io/instance={RELEASE}",
        "-o", "name",
    )  # fmt: skip
    assert cluster_left.strip() == ""
    # Kept on purpose: the CRDs (Helm never deletes crds/; the kopf peering CRDs carry
    # resource-policy keep) and the ClusterKopfPeering object made by the post-install hook.
