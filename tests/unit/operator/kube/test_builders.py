"""The pool's DaemonSets and Service as pure dicts: settings, chip classes, security, schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.common import agent_pod_selector
from hatswarm_operator.control.converters import routing_table
from hatswarm_operator.kube.builders import (
    DEFAULT_AGENT_IMAGE,
    SETTINGS_HASH,
    apply_agent_defaults,
    build_daemonset,
    build_daemonsets,
    build_service,
    label_selector,
    load_agent_defaults,
    needs_update,
    quantity_bytes,
    stale_daemonsets,
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
    assert ds["metadata"]["name"] == "hatswarm-agent-floor-1-hailo8l"
    assert ds["metadata"]["namespace"] == "edge"
    labels = {
        "app.kubernetes.io/name": "hatswarm-agent",
        "app.kubernetes.io/managed-by": "hatswarm",
        "hatswarm.io/pool": "floor-1",
        "hatswarm.io/agent-class": "hailo8l",
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
    assert c["resources"]["limits"]["squat.ai/hailo"] == "1"  # a string: the client refuses ints
    assert arg(c, "--backend") == "auto"
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
    assert "squat.ai/hailo" not in c["resources"].get("limits", {})
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["npu"]["hostPath"] == {"path": "/dev/hailo0", "type": "CharDevice"}
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/hatswarm/floor-1"
    assert {"name": "npu", "mountPath": "/dev/hailo0"} in c["volumeMounts"]


def test_cpu_backends_ask_for_no_npu() -> None:
    for backend in ("onnxruntime", "simulated"):
        for ds in build_daemonsets(pool(agent={"backend": backend})):
            assert "squat.ai/hailo" not in container(ds)["resources"].get("limits", {})
    (only,) = build_daemonsets(pool(agent={"backend": "onnxruntime"}))
    assert arg(container(only), "--accelerator") == "cpu"
    assert "affinity" not in only["spec"]["template"]["spec"]  # every node of the pool
    assert only["metadata"]["name"] == "hatswarm-agent-floor-1-cpu"


# --- per-node accelerators --------------------------------------------------------------------


def _matches(requirement: dict[str, Any], labels: dict[str, str]) -> bool:
    value = labels.get(requirement["key"])
    if requirement["operator"] == "In":
        return value in requirement["values"]
    assert requirement["operator"] == "NotIn"
    return value not in requirement["values"]


def schedules_on(ds: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a DaemonSet's pod may run on a node (nodeSelector + required node affinity)."""
    pod = ds["spec"]["template"]["spec"]
    if not all(labels.get(k) == v for k, v in pod["nodeSelector"].items()):
        return False
    required = (
        pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if required is None:
        return True
    return any(
        all(_matches(r, labels) for r in term.get("matchExpressions", []))
        for term in required["nodeSelectorTerms"]
    )


FLOOR = {"hatswarm.io/pool": "floor-1"}
NODES = {
    "pi-8l": {**FLOOR, "hatswarm.io/accelerator": "hailo8l"},
    "pi-8": {**FLOOR, "hatswarm.io/accelerator": "hailo8"},
    "pi-10h": {**FLOOR, "hatswarm.io/accelerator": "hailo10h"},
    "pi-cpu": {**FLOOR, "hatswarm.io/accelerator": "cpu"},
    "pi-bare": dict(FLOOR),  # no accelerator label: a CPU node
}


def test_a_mixed_pool_renders_agents_that_request_only_what_each_node_has() -> None:
    """hailo8l, hailo8, hailo10h and cpu nodes: each node runs exactly one agent, which asks
    for an NPU only where the node has one, and starts as that chip."""
    p = pool(accelerators=["hailo8l", "hailo8", "hailo10h", "cpu"])
    dss = build_daemonsets(p)
    assert [d["metadata"]["name"] for d in dss] == [
        "hatswarm-agent-floor-1-hailo8l",
        "hatswarm-agent-floor-1-hailo8",
        "hatswarm-agent-floor-1-hailo10h",
        "hatswarm-agent-floor-1-cpu",
    ]
    expected = {
        "pi-8l": ("hailo8l", "auto", {"squat.ai/hailo": "1"}),
        "pi-8": ("hailo8", "auto", {"squat.ai/hailo": "1"}),
        "pi-10h": ("hailo10h", "auto", {"squat.ai/hailo": "1"}),
        "pi-cpu": ("cpu", "onnxruntime", {}),
        "pi-bare": ("cpu", "onnxruntime", {}),
    }
    for node, labels in NODES.items():
        runs = [d for d in dss if schedules_on(d, labels)]
        assert len(runs) == 1, (node, [d["metadata"]["name"] for d in runs])
        c = container(runs[0])
        npu = {k: v for k, v in c["resources"]["limits"].items() if k not in ("cpu", "memory")}
        assert (arg(c, "--accelerator"), arg(c, "--backend"), npu) == expected[node]
    # Distinct selectors: no two DaemonSets ever adopt each other's pods.
    selectors = [tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in dss]
    assert len(set(selectors)) == len(dss)
    # One Service, one operator view and one scale selector over every class.
    svc = build_service(p)
    for d in dss:
        tpl = d["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= tpl.items()
        for requirement in label_selector("floor-1").split(","):
            key, _, value = requirement.partition("=")
            assert tpl[key] == value
    assert agent_pod_selector("floor-1") == label_selector("floor-1")


def test_per_chip_resource_names_and_a_pool_without_cpu_nodes() -> None:
    p = pool(
        accelerators=["hailo8", "hailo10h"],
        agent={"npu": {"resourceName": "hailo.ai/npu", "resourceNames": {"hailo10h": "h.io/h10"}}},
    )
    dss = build_daemonsets(p)
    assert [d["metadata"]["labels"]["hatswarm.io/agent-class"] for d in dss] == [
        "hailo8",
        "hailo10h",
    ]
    limits = [container(d)["resources"]["limits"] for d in dss]
    assert limits[0]["hailo.ai/npu"] == "1" and "h.io/h10" not in limits[0]
    assert limits[1]["h.io/h10"] == "1" and "hailo.ai/npu" not in limits[1]
    assert not any(schedules_on(d, NODES["pi-bare"]) for d in dss)  # no cpu class: no agent


def test_simulated_pools_run_each_chip_class_as_that_chip_without_an_npu() -> None:
    """kind: nodes labelled hailo8 run the simulated Hailo-8, not the pool's first chip."""
    dss = build_daemonsets(pool(agent={"backend": "simulated"}))
    got = {arg(container(d), "--accelerator"): arg(container(d), "--backend") for d in dss}
    assert got == {
        "hailo8l": "simulated",
        "hailo8": "simulated",
        "hailo10h": "simulated",
        "cpu": "onnxruntime",
    }
    for d in dss:
        assert not {"squat.ai/hailo"} & container(d)["resources"]["limits"].keys()


def test_dropped_chip_classes_and_the_old_single_daemonset_are_stale() -> None:
    p = pool(accelerators=["hailo8l", "cpu"])
    assert stale_daemonsets(p) == [
        "hatswarm-agent-floor-1",
        "hatswarm-agent-floor-1-hailo8",
        "hatswarm-agent-floor-1-hailo10h",
    ]
    wanted = {d["metadata"]["name"] for d in build_daemonsets(p)}
    assert not wanted & set(stale_daemonsets(p))


# --- agent pod settings --------------------------------------------------------------------


def test_agent_pod_settings_reach_every_agent_pod() -> None:
    user_affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                ]
            }
        },
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
    }
    tolerations = [{"key": "hatswarm.io/npu", "operator": "Exists", "effect": "NoSchedule"}]
    p = pool(
        accelerators=["hailo8", "cpu"],
        agent={
            "imagePullSecrets": [{"name": "registry-creds"}],
            "tolerations": tolerations,
            "affinity": user_affinity,
            "priorityClassName": "hatswarm-agent",
            "serviceAccountName": "hatswarm-agent",
            "podLabels": {"team": "vision", "hatswarm.io/pool": "spoofed"},
            "podAnnotations": {"example.com/owner": "line-a", "prometheus.io/port": "1"},
        },
    )
    for ds in build_daemonsets(p):
        tpl = ds["spec"]["template"]
        pod = tpl["spec"]
        assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
        assert pod["tolerations"] == tolerations
        assert pod["priorityClassName"] == "hatswarm-agent"
        assert pod["serviceAccountName"] == "hatswarm-agent"
        assert pod["automountServiceAccountToken"] is False  # the agent never calls the API
        assert tpl["metadata"]["labels"]["team"] == "vision"
        assert tpl["metadata"]["labels"]["hatswarm.io/pool"] == "floor-1"  # ours win
        assert tpl["metadata"]["annotations"]["example.com/owner"] == "line-a"
        assert tpl["metadata"]["annotations"]["prometheus.io/port"] == "9090"
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert len(terms["nodeSelectorTerms"]) == 2  # the user's OR, each ANDed with the class
        for term in terms["nodeSelectorTerms"]:
            assert term["matchExpressions"][-1]["key"] == "hatswarm.io/accelerator"
        assert pod["affinity"]["podAntiAffinity"] == user_affinity["podAntiAffinity"]
    zone_a_h8 = {**FLOOR, "zone": "a", "hatswarm.io/accelerator": "hailo8"}
    zone_c_h8 = {**FLOOR, "zone": "c", "hatswarm.io/accelerator": "hailo8"}
    h8, cpu = build_daemonsets(p)
    assert schedules_on(h8, zone_a_h8) and not schedules_on(cpu, zone_a_h8)
    assert not schedules_on(h8, zone_c_h8)  # the user's affinity still binds
    assert user_affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"] == [{"key": "zone", "operator": "In", "values": ["a"]}]


def test_agent_image_is_filled_at_reconcile_time_not_stored_by_the_crd() -> None:
    """A pool that names no image runs the operator's own version (an upgrade upgrades it);
    the cluster's defaults (the chart) win over that, and the pool's own image over both."""
    assert pool().spec.agent.image is None
    assert "image" not in pool().spec.agent.wire()
    assert container(build_daemonset(pool()))["image"] == DEFAULT_AGENT_IMAGE
    assert DEFAULT_AGENT_IMAGE == "ghcr.io/hatswarm/agent:0.1.0"  # hatswarm_operator.__version__
    chart = apply_agent_defaults(pool(), {"image": "registry.local/agent:0.2.0"})
    assert container(build_daemonset(chart))["image"] == "registry.local/agent:0.2.0"
    mine = apply_agent_defaults(
        pool(agent={"image": "mine/agent:1"}), {"image": "registry.local/agent:0.2.0"}
    )
    assert container(build_daemonset(mine))["image"] == "mine/agent:1"
    # A Hailo-10H needs HailoRT 5, the Hailo-8 family HailoRT 4: one image per chip class.
    mixed = pool(agent={"images": {"hailo10h": "agent-hailo:h10"}, "image": "agent-hailo:h8"})
    got = {
        d["metadata"]["labels"]["hatswarm.io/agent-class"]: container(d)["image"]
        for d in build_daemonsets(mixed)
    }
    assert got == {
        "hailo8l": "agent-hailo:h8",
        "hailo8": "agent-hailo:h8",
        "hailo10h": "agent-hailo:h10",
        "cpu": "agent-hailo:h8",
    }


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
            agent={
                "imagePullSecrets": [{"name": "creds"}],
                "tolerations": [{"key": "npu", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 1,
                                "preference": {
                                    "matchExpressions": [
                                        {"key": "z", "operator": "In", "values": ["a"]}
                                    ]
                                },
                            }
                        ]
                    }
                },
                "priorityClassName": "p",
                "serviceAccountName": "sa",
                "podLabels": {"team": "vision"},
            }
        ),
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
    docs = [obj for p in pools for obj in (*build_daemonsets(p), build_service(p))]
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
