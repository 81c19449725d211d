"""The pool's DaemonSet and Service as pure dicts: settings, security, and schema-valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hatswarm_operator.api import InferencePool
from hatswarm_operator.control.converters import routing_table
from hatswarm_operator.kube.builders import (
    SETTINGS_HASH,
    apply_agent_defaults,
    build_daemonset,
    build_service,
    load_agent_defaults,
    needs_update,
    quantity_bytes,
)

from tests.unit.operator.factories import make_pool

ROOT = Path(__file__).resolve().parents[4]
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def pool(**spec: Any) -> InferencePool:
    return make_pool(
        "floor-1", namespace="edge", **{"nodeSelector": {"hatswarm.io/pool": "floor-1"}, **spec}
    )


def container(ds: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = ds["spec"]["template"]["spec"]["containers"][0]
    return c


def arg(c: dict[str, Any], flag: str) -> str:
    args: list[str] = c["args"]
    return args[args.index(flag) + 1]


def test_daemonset_runs_the_agent_on_the_pool_nodes() -> None:
    ds = build_daemonset(pool(agent={"port": 7001, "metricsPort": 9191, "backend": "simulated"}))
    assert ds["metadata"]["name"] == "hatswarm-agent-floor-1"
    assert ds["metadata"]["namespace"] == "edge"
    labels = {
        "app.kubernetes.io/name": "hatswarm-agent",
        "app.kubernetes.io/managed-by": "hatswarm",
        "hatswarm.io/pool": "floor-1",
    }
    assert ds["metadata"]["labels"] == labels
    tpl = ds["spec"]["template"]
    assert tpl["metadata"]["labels"] == labels
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert tpl["spec"]["nodeSelector"] == {"hatswarm.io/pool": "floor-1"}
    c = container(ds)
    assert arg(c, "--port") == "7001"
    assert arg(c, "--host") == "0.0.0.0"
    assert arg(c, "--node-name") == "$(NODE_NAME)"
    assert arg(c, "--backend") == "simulated"
    assert arg(c, "--accelerator") == "hailo8l"
    assert arg(c, "--state-dir") == "/var/lib/hatswarm"
    assert arg(c, "--metrics-port") == "9191"
    assert arg(c, "--cache-max-bytes") == str(2 * 2**30)
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 7001, "metrics": 9191}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["grpc"] == {"port": 7001}


def test_default_agent_is_restricted_and_gets_the_npu_from_the_device_plugin() -> None:
    ds = build_daemonset(pool())
    c = container(ds)
    assert c["resources"]["limits"]["hailo.ai/h8l"] == 1
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["privileged"] is False
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {"sizeLimit": "2Gi"}}
    assert not any("hostPath" in v for v in volumes.values())


def test_host_device_mounts_the_device_file_in_a_privileged_container() -> None:
    ds = build_daemonset(
        pool(agent={"npu": {"hostDevice": True, "deviceFile": "/dev/hailo0"}, "cacheSize": "1Gi"})
    )
    c = container(ds)
    assert c["securityContext"]["privileged"] is True
    assert "hailo.ai/h8l" not in c["resources"].get("limits", {})
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["npu"]["hostPath"] == {"path": "/dev/hailo0", "type": "CharDevice"}
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/hatswarm/floor-1"
    assert {"name": "npu", "mountPath": "/dev/hailo0"} in c["volumeMounts"]


def test_cpu_backends_ask_for_no_npu() -> None:
    for backend in ("onnxruntime", "simulated"):
        c = container(build_daemonset(pool(agent={"backend": backend})))
        assert "hailo.ai/h8l" not in c["resources"].get("limits", {})
    c = container(build_daemonset(pool(agent={"backend": "onnxruntime"})))
    assert arg(c, "--accelerator") == "cpu"


def test_cloud_token_secret_is_mounted_and_named_to_the_agent() -> None:
    p = pool(cloudFallback={"endpoint": "oip.example:443", "tokenSecretRef": {"name": "cloud"}})
    ds = build_daemonset(p)
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cloud-token"]["secret"]["secretName"] == "cloud"
    assert volumes["cloud-token"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    mounts = {m["name"]: m for m in container(ds)["volumeMounts"]}
    assert mounts["cloud-token"]["mountPath"] == "/var/run/hatswarm/cloud-token"
    assert mounts["cloud-token"]["readOnly"] is True
    # The table names the token; only the agent's own flag says where its file is.
    assert arg(container(ds), "--cloud-token") == "cloud=/var/run/hatswarm/cloud-token/token"
    table = routing_table(p, [], 1)
    assert table.cloud.token_name == "cloud" and table.cloud.token_file == ""


def test_pool_token_is_mounted_read_only_and_passed_to_the_agent() -> None:
    p = pool(auth={"tokenSecretRef": {"name": "floor-token", "key": "pool"}})
    ds = build_daemonset(p)
    c = container(ds)
    assert arg(c, "--auth-token-file") == "/var/run/hatswarm/token/pool"
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["auth-token"]["secret"] == {
        "secretName": "floor-token",
        "items": [{"key": "pool", "path": "pool"}],
        "defaultMode": 0o440,
    }
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["auth-token"] == {
        "name": "auth-token",
        "mountPath": "/var/run/hatswarm/token",
        "readOnly": True,
    }
    assert "--tls-cert" not in c["args"]
    # A token alone keeps the native gRPC probes: the agent leaves grpc.health.v1 open.
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["grpc"] == {"port": p.spec.agent.port}
    # Turning auth on rolls the agents.
    hash_of = lambda ds: ds["spec"]["template"]["metadata"]["annotations"][SETTINGS_HASH]  # noqa: E731
    assert hash_of(ds) != hash_of(build_daemonset(pool()))


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_secret_is_mounted_and_probes_fall_back_to_tcp(mutual: bool) -> None:
    ds = build_daemonset(pool(auth={"tlsSecretRef": {"name": "floor-tls"}, "mutualTls": mutual}))
    c = container(ds)
    assert arg(c, "--tls-cert") == "/var/run/hatswarm/tls/tls.crt"
    assert arg(c, "--tls-key") == "/var/run/hatswarm/tls/tls.key"
    assert ("--tls-ca" in c["args"]) is mutual
    if mutual:
        assert arg(c, "--tls-ca") == "/var/run/hatswarm/tls/ca.crt"
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    keys = [i["key"] for i in volumes["tls"]["secret"]["items"]]
    assert keys == ["tls.crt", "tls.key", *(["ca.crt"] if mutual else [])]
    assert volumes["tls"]["secret"]["secretName"] == "floor-tls"
    assert volumes["tls"]["secret"]["defaultMode"] == 0o440
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["tls"]["mountPath"] == "/var/run/hatswarm/tls"
    assert mounts["tls"]["readOnly"] is True
    # Kubernetes' gRPC probe cannot speak TLS: a TCP connect to the gRPC port instead.
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["tcpSocket"] == {"port": "grpc"}
        assert "grpc" not in c[probe]


def test_agent_settings_change_rolls_the_pods_and_marks_the_object_for_update() -> None:
    a = build_daemonset(pool())
    b = build_daemonset(pool(agent={"image": "ghcr.io/hatswarm/agent:0.2.0"}))
    c = build_daemonset(pool(routing={"retries": 5}))  # not an agent setting
    hash_of = lambda ds: ds["spec"]["template"]["metadata"]["annotations"][SETTINGS_HASH]  # noqa: E731
    assert hash_of(a) != hash_of(b)
    assert hash_of(a) == hash_of(c)
    assert needs_update(a, b)
    assert not needs_update(a, build_daemonset(pool()))
    assert needs_update({"metadata": {}}, a)


def test_service_is_the_pools_entry_point() -> None:
    svc = build_service(pool(agent={"port": 7001}))
    assert svc["metadata"]["name"] == "floor-1"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/name": "hatswarm-agent",
        "hatswarm.io/pool": "floor-1",
    }
    assert svc["spec"]["ports"] == [
        {
            "name": "grpc",
            "port": 7001,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2Gi", 2 * 2**30), ("500M", 500 * 10**6), ("1.5Ki", 1536), ("42", 42)],
)
def test_quantities(text: str, expected: int) -> None:
    assert quantity_bytes(text) == expected


def test_built_objects_pass_kubernetes_validate_strict(tmp_path: Path) -> None:
    example = yaml.safe_load((ROOT / "examples" / "pool.yaml").read_text())
    pools = [
        InferencePool.model_validate(example),
        pool(),
        pool(agent={"backend": "onnxruntime", "npu": {"resourceName": None}}),
        pool(agent={"npu": {"hostDevice": True, "deviceFile": "/dev/hailo0"}}),
        pool(
            auth={
                "tokenSecretRef": {"name": "t"},
                "tlsSecretRef": {"name": "tls"},
                "mutualTls": True,
            },
            cloudFallback={"endpoint": "oip.example:443", "tokenSecretRef": {"name": "c"}},
        ),
        pool(auth={"tlsSecretRef": {"name": "tls"}}),
    ]
    docs = [obj for p in pools for obj in (build_daemonset(p), build_service(p))]
    path = tmp_path / "built.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        [str(VALIDATE), "--strict", "--quiet", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cluster_agent_defaults_fill_what_the_pool_leaves_at_builtin(tmp_path: Path) -> None:
    path = tmp_path / "agent-defaults.yaml"
    path.write_text("image: registry.local/agent:9\nbackend: simulated\nport: 8001\n")
    defaults = load_agent_defaults(path)
    assert load_agent_defaults(tmp_path / "absent.yaml") == {}
    p = apply_agent_defaults(pool(agent={"backend": "onnxruntime"}), defaults)
    assert p.spec.agent.image == "registry.local/agent:9"  # left at the built-in: filled
    assert p.spec.agent.backend == "onnxruntime"  # set by the pool: kept
    assert apply_agent_defaults(pool(), {}) == pool()
    path.write_text("port: 0\n")
    with pytest.raises(ValueError, match="port"):
        load_agent_defaults(path)


def test_by_default_the_agents_get_the_control_token_and_a_generated_client_token() -> None:
    c = container(build_daemonset(pool()))
    volumes = {v["name"]: v for v in build_daemonset(pool())["spec"]["template"]["spec"]["volumes"]}
    assert arg(c, "--control-token-file") == "/var/run/hatswarm/control/token"
    assert volumes["control-token"]["secret"] == {
        "secretName": "hatswarm-control-floor-1",
        "items": [{"key": "token", "path": "token"}],
        "defaultMode": 0o440,
    }
    assert arg(c, "--auth-token-file") == "/var/run/hatswarm/token/token"
    assert volumes["auth-token"]["secret"]["secretName"] == "hatswarm-clients-floor-1"
    # Serving anyone is explicit; the control token stays.
    opened = container(build_daemonset(pool(auth={"unauthenticatedInference": True})))
    assert "--auth-token-file" not in opened["args"] and "--control-token-file" in opened["args"]


def test_trusted_keys_and_file_roots_come_from_the_pool() -> None:
    p = pool(
        auth={"trustedKeysSecret": "publishers", "requireSignatures": True},
        agent={"fileRoots": ["/srv/models"]},
    )
    ds = build_daemonset(p)
    c = container(ds)
    assert arg(c, "--trusted-keys") == "/var/run/hatswarm/trusted-keys"
    assert "--require-signatures" in c["args"]
    assert arg(c, "--allow-file-root") == "/srv/models"
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["trusted-keys"]["secret"] == {"secretName": "publishers", "defaultMode": 0o440}
    assert volumes["models-0"]["hostPath"] == {"path": "/srv/models", "type": "Directory"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["models-0"] == {"name": "models-0", "mountPath": "/srv/models", "readOnly": True}
    with pytest.raises(ValueError, match="must not contain"):
        pool(agent={"fileRoots": ["/srv/../etc"]})
    with pytest.raises(ValueError, match=r"needs auth\.trustedKeysSecret"):
        pool(auth={"requireSignatures": True})
