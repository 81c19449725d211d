"""hatswarm on a real (kind) cluster: the README's quickstart, failover, then uninstall.

Runs where `kind` and a container engine (docker or podman) work: a hosted CI runner
(.github/workflows/e2e-kind.yaml) or a laptop, through `make e2e-kind`. Without them the tests
skip with the reason, except in CI (`CI=true`), where a missing tool is a failure: a green CI
run must mean the e2e ran. The flow, one test per step, in order (they share one cluster):

1. a kind cluster: a control plane and three workers labelled like the quickstart's Pi nodes
   (kind-config.yaml: a Hailo-8, a Hailo-8L and a CPU-only node, on two lines);
2. the images built by images/build.sh are loaded into it;
3. the quickstart of charts/hatswarm/README.md, command by command (parsed from the README, so
   the README cannot drift from what ran): namespace, Secret, model ConfigMap, `helm install`
   (plus values-kind.yaml: local images, the simulated NPU), the examples, `kubectl wait`,
   `helm test`; an agent Ready on each worker, the device plugin Ready on the chip nodes;
4. inference through the pool's Service from the host (kubectl port-forward + tritonclient);
5. failover: a client Job *inside* the cluster sends requests to the Service the whole time an
   agent pod holding a replica is deleted (port-forward pins one pod, so it cannot test this);
   then a drained node loses its replica;
6. `helm uninstall` with the models still there: the pre-delete hook releases the finalizers,
   so deleting the objects and then the namespace completes.

The cluster is kept when a test failed (the workflow's diagnostics step reads it, then deletes
it) and in CI; locally it is deleted after a clean run unless HATSWARM_E2E_KEEP=1.
HATSWARM_E2E_REUSE=1 uses a running cluster of the same name; HATSWARM_E2E_SKIP_BUILD=1 trusts
the images to exist.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART_README = ROOT / "charts" / "hatswarm" / "README.md"
CLUSTER = "hatswarm-e2e"
NAMESPACE = "hatswarm"  # the quickstart's
RELEASE = "hatswarm"
POOL = "floor-1"
VERSION = "0.1.0"
OPERATOR_IMAGE = f"ghcr.io/hatswarm/operator:{VERSION}"
AGENT_IMAGE = f"ghcr.io/hatswarm/agent:{VERSION}"
WORKERS = 3


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


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


def require_tools() -> None:
    """Skip without kind or an engine, except in CI: there a missing tool fails the run."""
    reason = _missing()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and the e2e cannot run: {reason}")
    pytest.skip(reason)


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


def pool_token() -> str:
    secret = kjson("-n", NAMESPACE, "get", "secret", "pool-token")
    return base64.b64decode(secret["data"]["token"]).decode()


def infer(port: int, token: str) -> list[float]:
    """One OIP ModelInfer from the host with tritonclient, in a child (see tests/tritonjobs.py:
    tritonclient's protobufs cannot share a process with the agent's stubs)."""
    script = (
        "import sys, json, numpy as np, tritonclient.grpc as g\n"
        "c = g.InferenceServerClient(sys.argv[1])\n"
        "x = g.InferInput('x', [1, 4], 'FP32')\n"
        "x.set_data_from_numpy(np.array([[0, 1, 2, 3]], dtype=np.float32))\n"
        "r = c.infer('adder', [x], headers={'authorization': 'Bearer ' + sys.argv[2]},"
        " client_timeout=10)\n"
        "print(json.dumps(r.as_numpy('y').ravel().tolist()))\n"
    )
    out = run(sys.executable, "-c", script, f"127.0.0.1:{port}", token, timeout=60)
    values: list[float] = json.loads(out)
    return values


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


def quickstart_commands() -> list[str]:
    """The shell commands of the chart README's quickstart, continuation lines joined."""
    block = CHART_README.read_text().split("## Quickstart", 1)[1].split("```sh", 1)[1]
    joined = block.split("```", 1)[0].replace("\\\n", " ")
    lines = [line.split(" #", 1)[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def client_job(token_secret: str, seconds: int) -> dict[str, Any]:
    """A Job that sends ModelInfer to the pool's Service for `seconds`, one new connection per
    request (so kube-proxy spreads them over the agents like independent clients), one retry on
    UNAVAILABLE like any OIP client, and prints a JSON summary. It runs the agent image, whose
    Python has grpcio and the OIP stubs."""
    script = f"""
import json, os, time, grpc, numpy as np
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as rpc
target, meta = "{POOL}.{NAMESPACE}.svc:8001", [("authorization", "Bearer " + os.environ["TOKEN"])]
req = pb.ModelInferRequest(model_name="adder")
req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
req.raw_input_contents.append(np.array([[0, 1, 2, 3]], np.float32).tobytes())
def once():
    with grpc.insecure_channel(target) as ch:
        r = rpc.GRPCInferenceServiceStub(ch).ModelInfer(req, metadata=meta, timeout=5)
    return np.frombuffer(r.raw_output_contents[0], np.float32).tolist()
summary = {{"ok": 0, "retried": 0, "failed": 0, "wrong": 0, "errors": []}}
print("started", flush=True)
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    for attempt in (0, 1):
        try:
            y = once()
        except grpc.RpcError as err:
            if attempt == 0 and err.code() == grpc.StatusCode.UNAVAILABLE:
                summary["retried"] += 1
                continue
            summary["failed"] += 1
            summary["errors"].append(f"{{err.code().name}}: {{err.details()}}"[:200])
            break
        summary["ok" if y == [1.0, 2.0, 3.0, 4.0] else "wrong"] += 1
        break
    time.sleep(0.05)
print(json.dumps(summary), flush=True)
"""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "e2e-client", "namespace": NAMESPACE},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "e2e-client"}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "client",
                            "image": AGENT_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", script],
                            "env": [
                                {
                                    "name": "TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": token_secret, "key": "token"}
                                    },
                                }
                            ],
                            "securityContext": {
                                "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


# --- the flow --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[str]:
    require_tools()
    existing = run("kind", "get", "clusters", check=False).split()
    reuse = os.environ.get("HATSWARM_E2E_REUSE") == "1" and CLUSTER in existing
    if not reuse:
        if CLUSTER in existing:
            run("kind", "delete", "cluster", "--name", CLUSTER)
        run("kind", "create", "cluster", "--config", str(HERE / "kind-config.yaml"),
            "--wait", "180s", timeout=900)  # fmt: skip
    failed_before = request.session.testsfailed
    yield CLUSTER
    failed = request.session.testsfailed > failed_before
    keep = failed or reuse or in_ci() or os.environ.get("HATSWARM_E2E_KEEP") == "1"
    if keep:
        why = "a test failed" if failed else "CI/KEEP/REUSE"
        print(f"\nkeeping kind cluster {CLUSTER} ({why}): kind delete cluster --name {CLUSTER}")
    else:
        run("kind", "delete", "cluster", "--name", CLUSTER, check=False)


@pytest.fixture(scope="module")
def images(cluster: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    engine = _engine()
    assert engine is not None
    if os.environ.get("HATSWARM_E2E_SKIP_BUILD") != "1":
        arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
        run(str(ROOT / "images" / "build.sh"), "--platform", f"linux/{arch}", timeout=1800)
    for image in (OPERATOR_IMAGE, AGENT_IMAGE):
        if engine == "docker":
            run("kind", "load", "docker-image", image, "--name", cluster, timeout=900)
        else:  # podman: through an archive
            archive = tmp_path_factory.mktemp("img") / "image.tar"
            run("podman", "save", "-o", str(archive), image, timeout=900)
            run("kind", "load", "image-archive", str(archive), "--name", cluster, timeout=900)


def as_run_here(command: str, helm: str) -> list[str] | None:
    """A quickstart command as this test runs it against the kind cluster (None: skipped)."""
    words = shlex.split(command.replace('"$(openssl rand -hex 24)"', "e2e-" + os.urandom(12).hex()))
    if words[:3] == ["kubectl", "label", "node"]:
        return None  # kind-config.yaml labels the workers the same way (checked below)
    if words[0] == "kubectl":
        return [kubectl_bin(), "--context", f"kind-{CLUSTER}", *words[1:]]
    if words[0] == "helm":
        extra = ["-f", str(HERE / "values-kind.yaml")] if words[1] == "install" else []
        return [helm, "--kube-context", f"kind-{CLUSTER}", *words[1:], *extra]
    raise AssertionError(f"quickstart command the e2e does not know how to run: {command}")


@pytest.fixture(scope="module")
def quickstart(images: None) -> str:
    """The chart README's quickstart, run from the repository root, command by command."""
    helm = helm_bin()
    commands = quickstart_commands()
    labels = [shlex.split(c) for c in commands if c.startswith("kubectl label node")]
    kind_nodes = yaml.safe_load((HERE / "kind-config.yaml").read_text())["nodes"]
    kind_labels = [n.get("labels", {}) for n in kind_nodes if n["role"] == "worker"]
    for words, node_labels in zip(labels, kind_labels, strict=True):
        wanted = dict(w.split("=", 1) for w in words[4:])
        assert {k: v for k, v in node_labels.items() if k in wanted} == wanted, words
    for command in commands:
        argv = as_run_here(command, helm)
        if argv is not None:
            run(*argv, cwd=str(ROOT), timeout=900)
    return helm


def test_operator_is_up_with_one_active_peer(quickstart: str) -> None:
    deploy = kjson("-n", NAMESPACE, "get", "deploy", f"{RELEASE}-operator")
    assert deploy["status"].get("readyReplicas") == 2
    peering = wait_for(
        "both replicas in the peering",
        lambda: len(kjson("get", "clusterkopfpeering", "hatswarm").get("status") or {}) >= 2,
    )
    assert peering


def test_agents_per_chip_class_run_on_every_worker(quickstart: str) -> None:
    def agents_ready() -> list[dict[str, Any]] | None:
        pods = agent_pods()
        return pods if len(pods) == WORKERS and all(ready(p) for p in pods) else None

    pods = wait_for("an agent Ready on each labelled worker", agents_ready, timeout=300)
    nodes = kjson("get", "nodes", "-l", f"hatswarm.io/pool={POOL}")["items"]
    workers = {n["metadata"]["name"]: n["metadata"]["labels"] for n in nodes}
    assert {p["spec"]["nodeName"] for p in pods} == set(workers)
    for pod in pods:
        chip = workers[pod["spec"]["nodeName"]].get("hatswarm.io/accelerator", "cpu")
        assert pod["metadata"]["labels"]["hatswarm.io/agent-class"] == chip
        c = pod["spec"]["containers"][0]
        assert c["args"][c["args"].index("--accelerator") + 1] == chip
        assert c["securityContext"]["runAsNonRoot"] is True  # the restricted profile
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    status = kjson("-n", NAMESPACE, "get", "ipool", POOL)["status"]
    by_node = {n["name"]: n["accelerator"] for n in status["nodes"]}
    assert by_node == {n: lb.get("hatswarm.io/accelerator", "cpu") for n, lb in workers.items()}
    # The device plugin runs on the chip nodes (no /dev/hailo* on kind: it offers 0 units).
    selector = "app.kubernetes.io/name=hatswarm-device-plugin"
    plugin = kjson("-n", "kube-system", "get", "pods", "-l", selector)
    chip_nodes = {n for n, lb in workers.items() if "hatswarm.io/accelerator" in lb}
    assert {p["spec"]["nodeName"] for p in plugin["items"] if ready(p)} == chip_nodes


def test_the_model_is_ready_from_the_model_store(quickstart: str) -> None:
    wait_for("2 ready replicas of adder", lambda: len(ready_nodes()) >= 2, timeout=300)
    placements = model_status()["placements"]
    nodes = kjson("get", "nodes", "-l", f"hatswarm.io/pool={POOL}")["items"]
    assert {p["node"] for p in placements if p["state"] == "Ready"} <= {
        n["metadata"]["name"] for n in nodes
    }
    assert kjson("-n", NAMESPACE, "get", "em", "adder")["status"]["phase"] == "Ready"


def test_inference_through_the_pool_service(quickstart: str) -> None:
    token = pool_token()
    with port_forward(f"svc/{POOL}", 8001) as port:
        assert wait_for("an answer", lambda: infer(port, token), timeout=60) == [1, 2, 3, 4]
        for _ in range(5):
            assert infer(port, token) == [1.0, 2.0, 3.0, 4.0]


def test_failover_seen_by_a_client_inside_the_cluster(quickstart: str) -> None:
    """A client Job keeps calling the Service while an agent holding a replica is deleted:
    every request is answered (at most one retry on UNAVAILABLE, as OIP clients do)."""
    job = client_job("pool-token", seconds=60)
    run(kubectl_bin(), "--context", f"kind-{CLUSTER}", "apply", "-f", "-",
        input=yaml.safe_dump(job))  # fmt: skip

    def started() -> bool:
        logs = kubectl("-n", NAMESPACE, "logs", "job/e2e-client", check=False)
        return "started" in logs

    wait_for("the client Job sending", started, timeout=120)
    time.sleep(5)  # some traffic before the loss
    victim_node = sorted(ready_nodes())[0]
    victim = next(p for p in agent_pods() if p["spec"]["nodeName"] == victim_node)
    kubectl("-n", NAMESPACE, "delete", "pod", victim["metadata"]["name"], "--wait=false")
    kubectl("-n", NAMESPACE, "wait", "job/e2e-client", "--for=condition=Complete",
            "--timeout=180s", timeout=200)  # fmt: skip
    summary = json.loads(kubectl("-n", NAMESPACE, "logs", "job/e2e-client").splitlines()[-1])
    kubectl("-n", NAMESPACE, "delete", "job", "e2e-client", "--wait=false")
    assert summary["failed"] == 0 and summary["wrong"] == 0, summary
    assert summary["ok"] >= 200, summary  # ~60 s at ~20 requests/s
    wait_for("2 ready replicas again", lambda: len(ready_nodes()) >= 2, timeout=300)


def test_drained_node_loses_its_replica(quickstart: str) -> None:
    node = sorted(ready_nodes())[0]
    kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s",
            timeout=180)  # fmt: skip
    try:
        wait_for(
            f"adder off the drained {node}, 2 replicas elsewhere",
            lambda: node not in ready_nodes() and len(ready_nodes()) >= 2,
            timeout=300,
        )
        token = pool_token()
        with port_forward(f"svc/{POOL}", 8001) as port:
            assert wait_for("an answer", lambda: infer(port, token), timeout=60) == [1, 2, 3, 4]
    finally:
        kubectl("uncordon", node)


def test_uninstall_never_leaves_objects_stuck(quickstart: str) -> None:
    """`helm uninstall` with the EdgeModel and the pool still there: the pre-delete hook stops
    the operator and releases its finalizers, so both objects, then the namespace, delete."""
    helm = quickstart
    run(helm, "--kube-context", f"kind-{CLUSTER}", "uninstall", RELEASE,
        "--namespace", NAMESPACE, "--wait", "--timeout", "3m", timeout=240)  # fmt: skip
    for kind, name in (("edgemodel", "adder"), ("inferencepool", POOL)):
        obj = kjson("-n", NAMESPACE, "get", kind, name)
        assert "hatswarm.io/finalizer" not in (obj["metadata"].get("finalizers") or []), kind
    left = kubectl(
        "get", "all,configmap,secret,networkpolicy,pdb,serviceaccount,role,rolebinding,job",
        "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name",
    )  # fmt: skip
    assert left.strip() == ""
    cluster_left = kubectl(
        "get", "clusterrole,clusterrolebinding", "-l", f"app.kubernetes.io/instance={RELEASE}",
        "-o", "name",
    )  # fmt: skip
    assert cluster_left.strip() == ""
    kubectl("-n", NAMESPACE, "delete", "edgemodel", "adder", "--timeout=60s", timeout=90)
    kubectl("-n", NAMESPACE, "delete", "inferencepool", POOL, "--timeout=60s", timeout=90)
    wait_for("agents gone with their pool", lambda: agent_pods() == [], timeout=180)
    kubectl("delete", "namespace", NAMESPACE, "--timeout=180s", timeout=200)
    # Kept on purpose: the CRDs (Helm never deletes crds/; the kopf peering CRDs carry
    # resource-policy keep) and the ClusterKopfPeering object made by the post-install hook.
