"""The Helm chart, offline: lint, render, schema-check, security defaults, RBAC, values schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hatswarm_operator.api import InferencePool
from hatswarm_operator.kube import builders, uninstall

from tests.unit.operator.api.schemacheck import validate as validate_cr

from .conftest import CHART, CRD_KINDS, FULL_VALUES, MONITORING_APIS, ROOT, Render, run_template

VARIANTS = {"default": [], "full": [FULL_VALUES]}
PRIVILEGED = {"t-hatswarm-device-plugin"}  # the device plugin alone needs /dev and the kubelet


def _by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _by_kind(objs, kind)
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


# --- lint ------------------------------------------------------------------------------------


def test_yamllint_on_the_chart_files() -> None:
    """yamllint (repo .yamllint) on every non-template YAML of the chart and deploy/."""
    files = [CHART / "Chart.yaml", CHART / "values.yaml", *sorted((CHART / "ci").glob("*.yaml"))]
    files += [*sorted((ROOT / "deploy").rglob("*.yaml")), CHART / "files" / "hatswarm-rules.yaml"]
    files += sorted((ROOT / "tests" / "e2e").glob("*.yaml"))
    files += sorted((ROOT / ".github").rglob("*.yaml"))
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-s", "-c", str(ROOT / ".yamllint"), *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict(helm: str, variant: str) -> None:
    args = [a for f in VARIANTS[variant] for a in ("-f", str(f))]
    proc = subprocess.run(
        [helm, "lint", "--strict", str(CHART), *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- render + kubernetes-validate ------------------------------------------------------------


def claimed_minors() -> list[str]:
    """Every Kubernetes minor from Chart.yaml's kubeVersion floor to the newest that
    kubernetes-validate knows (e.g. 1.28.0 ... 1.37.0)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    floor = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    m = re.fullmatch(r">=\s*1\.(\d+)\.0-0", floor)
    assert m, f"kubeVersion {floor!r}: expected '>=1.N.0-0' (an open range)"
    known = re.findall(r"^v1\.(\d+)\.0-local$", "\n".join(_schema_dirs(kubernetes_validate)), re.M)
    newest = max(int(n) for n in known)
    assert newest >= int(m.group(1)) + 5
    return [f"1.{n}.0" for n in range(int(m.group(1)), newest + 1)]


def _schema_dirs(module: Any) -> list[str]:
    return sorted(
        p.name for p in (Path(module.__file__).parent / "kubernetes-json-schema").iterdir()
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_pass_kubernetes_validate(render: Render, variant: str) -> None:
    """Every built-in kind passes kubernetes-validate --strict on every Kubernetes minor the
    chart claims (CRD-typed kinds are skipped: its schemas are Kubernetes' own; the
    InferencePool is checked against our CRD below)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objs = render(*VARIANTS[variant], api_versions=MONITORING_APIS)
    core = [o for o in objs if o["kind"] not in CRD_KINDS]
    assert len(core) >= 10
    errors = []
    for version in claimed_minors():
        for obj in core:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {err.message}")
    assert errors == []


def test_crds_install_on_every_claimed_minor() -> None:
    """The CRDs (chart copy) pass kubernetes-validate --strict from the kubeVersion floor up.
    Their CEL rules use `fieldPath` (1.28+), which is why the floor is 1.28, not 1.27: 1.27
    is out of upstream support, and fieldPath makes the API server name the invalid field."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    crds = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]
    assert {c["spec"]["names"]["kind"] for c in crds} == {"EdgeModel", "InferencePool"}
    minors = claimed_minors()
    assert minors[0] == "1.28.0"
    errors = []
    for version in minors:
        for crd in crds:
            try:
                kubernetes_validate.validate(crd, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                errors.append(f"{version} {crd['metadata']['name']}: {err.message}")
    assert errors == []
    with pytest.raises(kubernetes_validate.ValidationError, match="fieldPath"):
        kubernetes_validate.validate(crds[0], "1.27.0", strict=True)  # why the floor moved


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm3_and_helm4_render_the_same(helm: str, render: Render, variant: str) -> None:
    args = [a for f in VARIANTS[variant] for a in ("-f", str(f))]
    proc = run_template(helm, *args)
    assert proc.returncode == 0, proc.stderr
    mine = [d for d in yaml.safe_load_all(proc.stdout) if d]
    ref = render(*VARIANTS[variant])

    def stable(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for o in objs:  # generated tokens differ from run to run
            if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-pool-token"):
                o["data"] = {}
        return objs

    assert stable(mine) == stable(ref)


def test_the_inference_pool_passes_its_crd(render: Render) -> None:
    """The InferencePool the chart creates is accepted by the CRD (schema, CEL, no unknowns)."""
    for objs in (render(sets=["pool.enabled=true"]), render(FULL_VALUES)):
        assert validate_cr(_one(objs, "InferencePool")) == []
    default = _one(render(sets=["pool.enabled=true"]), "InferencePool")
    assert "agent" not in default["spec"]  # nothing stored: agentDefaults apply at reconcile
    assert default["spec"]["accelerators"] == ["hailo8l", "hailo8", "hailo10h", "cpu"]


def test_pool_agent_overrides_defaults(render: Render) -> None:
    """The chart's pool carries only pool.agent; the operator fills the rest from the
    ConfigMap at each reconcile, exactly as for a pool applied with kubectl."""
    objs = render(FULL_VALUES)
    pool = _one(objs, "InferencePool")
    agent = pool["spec"]["agent"]
    assert agent == {
        "cacheSize": "4Gi",
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "npu": {"hostDevice": True, "deviceFile": "/dev/hailo0"},
    }
    effective = effective_pool(objs)
    assert effective.spec.agent.cache_size == "4Gi"  # the pool's own
    assert effective.spec.agent.backend == "hailo"  # from agentDefaults
    assert effective.spec.agent.image == "ghcr.io/hatswarm/agent:0.1.0"
    assert effective.spec.agent.resources["limits"] == {"memory": "1Gi"}  # whole, never mixed
    assert pool["spec"]["cloudFallback"]["tokenSecretRef"] == {
        "name": "t-hatswarm-cloud-token",
        "key": "token",
    }
    assert pool["spec"]["auth"]["mutualTls"] is True


def test_no_pool_by_default(render: Render) -> None:
    objs = render()
    assert not _by_kind(objs, "InferencePool")
    assert not _by_kind(objs, "Secret")
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & {o["kind"] for o in objs}


# --- operator Deployment ---------------------------------------------------------------------


def test_operator_runs_two_peered_replicas(render: Render) -> None:
    deploy = _one(render(), "Deployment")
    assert deploy["spec"]["replicas"] == 2
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--peering-name=hatswarm" in args
    assert "--all-namespaces" in args
    assert "--standalone" not in args
    # kopf pauses all peers of one priority: each replica draws its own at start
    assert container["command"] == ["hatswarm-operator"]
    assert "--priority=auto" in args
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9100}
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    assert "--metrics-port=9100" in args
    peering = _one(render(), "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "hatswarm"
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    pdb = _one(render(), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1


def test_standalone_operator(render: Render) -> None:
    objs = render(
        sets=[
            "operator.replicas=1",
            "operator.peering.enabled=false",
            "operator.watchNamespaces={a}",
        ]
    )
    container = _one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["hatswarm-operator"]
    assert "--standalone" in container["args"]
    assert "--namespace=a" in container["args"]
    kinds = {o["kind"] for o in objs}
    assert not {"ClusterKopfPeering", "KopfPeering", "CustomResourceDefinition"} & kinds
    assert "PodDisruptionBudget" not in kinds  # nothing to keep with one replica


def test_namespaced_peering(render: Render) -> None:
    objs = render(FULL_VALUES, namespace="factory")
    peerings = _by_kind(objs, "KopfPeering")
    assert [p["metadata"]["namespace"] for p in peerings] == ["factory"]  # globs: by hand
    assert not _by_kind(objs, "ClusterKopfPeering")


def agent_defaults(objs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = next(
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")
    )
    data: dict[str, Any] = yaml.safe_load(cm["data"]["agent-defaults.yaml"])
    return data


def effective_pool(objs: list[dict[str, Any]]) -> InferencePool:
    """The chart's pool as the operator acts on it (its agent defaults file applied)."""
    pool = InferencePool.model_validate(_one(objs, "InferencePool"))
    return builders.apply_agent_defaults(pool, agent_defaults(objs))


def test_agent_defaults_config(render: Render) -> None:
    defaults = agent_defaults(render())
    assert defaults["npu"] == {"resourceName": "squat.ai/hailo", "hostDevice": False}
    assert defaults["backend"] == "auto"
    assert defaults["image"] == "ghcr.io/hatswarm/agent:0.1.0"
    assert defaults["cacheSize"] == "2Gi"
    assert defaults["resources"]["limits"]["memory"] == "2Gi"  # a 4 GB Pi 5 keeps headroom
    env = _one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HATSWARM_AGENT_DEFAULTS", "value": "/etc/hatswarm/agent-defaults.yaml"} in env


# --- security --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_security_defaults_on_every_pod(render: Render, variant: str) -> None:
    for obj in render(*VARIANTS[variant]):
        if obj["kind"] not in {"Deployment", "DaemonSet", "StatefulSet", "Job", "Pod"}:
            continue
        if obj["metadata"]["name"] in PRIVILEGED:
            continue
        pod = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert "limits" in c["resources"] and "requests" in c["resources"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_is_least_privilege(render: Render, variant: str) -> None:
    role = next(
        o
        for o in render(*VARIANTS[variant])
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "t-hatswarm-operator"
    )
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
    for (group, res), verbs in granted.items():
        if (group, res) != ("apps", "daemonsets"):  # a pool's dropped chip class
            assert "delete" not in verbs, (group, res)
        assert "deletecollection" not in verbs, (group, res)
        assert "escalate" not in verbs and "bind" not in verbs and "impersonate" not in verbs
    # Secrets: read and watched by name; each pool's generated tokens created when absent,
    # never updated or deleted.
    assert granted[("", "secrets")] == {"get", "list", "watch", "create"}
    assert granted[("", "nodes")] == {"get", "list", "watch"}
    assert granted[("apps", "daemonsets")] == {"get", "create", "patch", "delete"}
    assert granted[("hatswarm.io", "inferencepools/status")] == {"get", "patch"}
    assert ("events.k8s.io", "events") in granted and ("", "events") in granted
    assert ("apiextensions.k8s.io", "customresourcedefinitions") in granted
    peering = "kopfpeerings" if variant == "full" else "clusterkopfpeerings"
    assert granted[("kopf.dev", peering)] == {"get", "list", "watch", "patch"}
    assert (("", "namespaces") in granted) == (variant == "full")  # only for namespace globs


def test_network_policies(render: Render) -> None:
    objs = render(FULL_VALUES)
    policies = {p["metadata"]["name"]: p["spec"] for p in _by_kind(objs, "NetworkPolicy")}
    op = policies["t-hatswarm-operator"]
    assert op["policyTypes"] == ["Ingress", "Egress"]
    agents = policies["t-hatswarm-agents"]
    assert agents["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "hatswarm-agent"}}
    grpc_from = agents["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "192.168.10.0/24"}} in grpc_from
    assert not _by_kind(render(sets=["networkPolicy.enabled=false"]), "NetworkPolicy")


def test_the_pool_is_authenticated_by_default(render: Render) -> None:
    """Secure by default: the chart's pool gets a generated client token; serving inference
    without one is the pool's explicit choice. (Control needs the operator's own token,
    generated per pool by the operator: never a chart value.)"""
    objs = render(sets=["pool.enabled=true"])
    pool = _one(objs, "InferencePool")
    assert pool["spec"]["auth"]["tokenSecretRef"] == {
        "name": "t-hatswarm-pool-token",
        "key": "token",
    }
    token = _one(objs, "Secret")
    assert token["metadata"]["name"] == "t-hatswarm-pool-token"
    assert len(token["data"]["token"]) >= 40
    assert validate_cr(pool) == []
    opened = render(sets=["pool.enabled=true", "pool.unauthenticatedInference=true"])
    assert _one(opened, "InferencePool")["spec"]["auth"] == {"unauthenticatedInference": True}
    assert not _by_kind(opened, "Secret")
    signed = _one(
        render(
            sets=["pool.enabled=true", "pool.trustedKeysSecret=keys", "pool.requireSignatures=true"]
        ),
        "InferencePool",
    )
    assert signed["spec"]["auth"]["trustedKeysSecret"] == "keys"
    assert signed["spec"]["auth"]["requireSignatures"] is True
    assert validate_cr(signed) == []


def test_secrets_created_or_referenced(render: Render) -> None:
    objs = render(FULL_VALUES)
    secrets = {s["metadata"]["name"]: s for s in _by_kind(objs, "Secret")}
    assert secrets["t-hatswarm-agent-tls"]["type"] == "kubernetes.io/tls"
    assert len(secrets["t-hatswarm-pool-token"]["data"]["token"]) >= 40  # generated
    ref = render(
        sets=[
            "pool.enabled=true",
            "secrets.poolToken.existingSecret=mine",
            "secrets.poolToken.create=true",
        ]
    )
    assert not _by_kind(ref, "Secret")
    assert _one(ref, "InferencePool")["spec"]["auth"]["tokenSecretRef"]["name"] == "mine"


# --- values.schema.json and the cross-field checks -------------------------------------------

BAD_VALUES = [
    (["operator.replicas=two"], r"operator[./]replicas"),
    (["agentDefaults.backend=cuda"], r"agentDefaults[./]backend"),
    (["agentDefaults.cacheSize=lots"], r"agentDefaults[./]cacheSize"),
    (["agentDefaults.npu.deviceFile=/etc/passwd"], r"npu[./]deviceFile"),
    (["operater.replicas=1"], r"operater"),
    (["pool.accelerators={tpu}"], r"accelerators"),
    (["monitoring.interval=often"], r"monitoring[./]interval"),
    (["operator.peering.enabled=false"], r"operator\.peering\.enabled"),
    (["pool.mutualTls=true"], r"secrets\.tls"),
    (["pool.accelerators={hailo15h}"], r"accelerators"),
    (["agentDefaults.backend=cuda"], r"auto"),
    (["modelStore.enabled=true"], r"modelStore\.configMap or modelStore\.persistentVolumeClaim"),
    (
        ["devicePlugin.enabled=true", "devicePlugin.name=npu"],
        r"squat\.ai/npu but .*squat\.ai/hailo",
    ),
    (["agentDefaults.imagePullSecrets[0].name=Bad_Name"], r"imagePullSecrets"),
]


@pytest.mark.parametrize(("sets", "field"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_bad_values_fail_naming_the_field(helm4: str, sets: list[str], field: str) -> None:
    args = [a for s in sets for a in ("--set", s)]
    proc = run_template(helm4, *args)
    assert proc.returncode != 0, proc.stdout[:500]
    assert re.search(field, proc.stderr), proc.stderr


def test_bad_values_file_is_rejected(helm: str, tmp_path: Path) -> None:
    """Both helm 3 and helm 4 name the fields (their message formats differ)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("agentDefaults:\n  port: 70000\nnetworkPolicy:\n  enabled: yes-please\n")
    proc = run_template(helm, "-f", str(bad))
    assert proc.returncode != 0
    assert re.search(r"agentDefaults[./]port", proc.stderr), proc.stderr
    assert re.search(r"networkPolicy[./]enabled", proc.stderr), proc.stderr


# --- agents on a real fleet: pod settings, device plugin, model store ---------------------------


def test_agent_pods_get_pull_secrets_and_tolerations_from_values(render: Render) -> None:
    """values -> the operator's ConfigMap -> the DaemonSets the operator builds: every agent pod
    of every chip class carries the pull secret, tolerations and the other pod settings."""
    objs = render(FULL_VALUES)
    pool = effective_pool(objs)
    daemonsets = builders.build_daemonsets(pool)
    assert [d["metadata"]["labels"]["hatswarm.io/agent-class"] for d in daemonsets] == [
        "hailo8l",
        "hailo8",
        "hailo10h",
    ]
    for ds in daemonsets:
        pod = ds["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "factory-registry"}]
        assert pod["tolerations"] == [
            {"key": "hatswarm.io/npu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert pod["priorityClassName"] == "hatswarm-agent"
        assert pod["serviceAccountName"] == "hatswarm-agent"
        assert "preferredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["nodeAffinity"]
        assert ds["spec"]["template"]["metadata"]["labels"]["team"] == "vision"
    images = {
        d["metadata"]["labels"]["hatswarm.io/agent-class"]: d["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        for d in daemonsets
    }
    assert images == {
        "hailo8l": "ghcr.io/hatswarm/agent:0.1.0",
        "hailo8": "ghcr.io/hatswarm/agent:0.1.0",
        "hailo10h": "registry.factory.example/hatswarm/agent-hailo:0.1.0-hailort5.1.1",
    }  # HailoRT 5 (Hailo-10H) and 4 (Hailo-8/8L) in one pool: one image per chip
    # Also from agentDefaults alone, for a pool applied with kubectl (no pool.agent at all).
    plain = render(
        sets=[
            "agentDefaults.imagePullSecrets[0].name=regcred",
            "agentDefaults.tolerations[0].key=dedicated",
            "agentDefaults.tolerations[0].operator=Exists",
        ]
    )
    kubectl_pool = InferencePool.model_validate(
        yaml.safe_load((ROOT / "examples" / "pool.yaml").read_text())
    )
    applied = builders.apply_agent_defaults(kubectl_pool, agent_defaults(plain))
    for ds in builders.build_daemonsets(applied):
        pod = ds["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


def test_device_plugin_exposes_the_resource_the_agents_request(render: Render) -> None:
    objs = render(sets=["devicePlugin.enabled=true"])
    ds = next(o for o in objs if o["metadata"]["name"] == "t-hatswarm-device-plugin")
    assert ds["metadata"]["namespace"] == "kube-system"
    c = ds["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/squat/generic-device-plugin:latest"
    assert c["args"][0] == "--domain=squat.ai"
    flag, _, spec = c["args"][1].partition("=")
    assert flag == "--device"
    assert yaml.safe_load(spec) == {
        "name": "hailo",
        "groups": [{"paths": [{"path": "/dev/hailo*"}]}],
    }
    resource = f"{c['args'][0].split('=')[1]}/hailo"
    assert agent_defaults(objs)["npu"]["resourceName"] == resource
    volumes = {v["name"]: v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes == {"device-plugins": "/var/lib/kubelet/device-plugins", "dev": "/dev"}
    terms = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {
                    "key": "hatswarm.io/accelerator",
                    "operator": "In",
                    "values": ["hailo8l", "hailo8", "hailo10h"],
                }
            ]
        }
    ]
    # Only NPU agents ask for it; the operator puts it in their limits.
    pool = builders.apply_agent_defaults(
        InferencePool.model_validate(yaml.safe_load((ROOT / "examples" / "pool.yaml").read_text())),
        agent_defaults(objs),
    )
    asks = {
        d["metadata"]["labels"]["hatswarm.io/agent-class"]: d["spec"]["template"]["spec"][
            "containers"
        ][0]["resources"]["limits"].get(resource)
        for d in builders.build_daemonsets(pool)
    }
    assert asks == {"hailo8l": "1", "hailo8": "1", "hailo10h": "1", "cpu": None}
    assert not [o for o in render() if "device-plugin" in o["metadata"]["name"]]  # opt-in


def test_model_store_serves_a_config_map_to_the_agents_only(render: Render) -> None:
    objs = render(sets=["modelStore.enabled=true", "modelStore.configMap=hatswarm-models"])
    deploy = next(
        o
        for o in objs
        if o["metadata"]["name"] == "t-hatswarm-models" and o["kind"] == "Deployment"
    )
    pod = deploy["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "ghcr.io/hatswarm/agent:0.1.0"  # the agent image's Python
    assert c["command"] == ["python3", "-m", "http.server", "8080", "--directory", "/models"]
    assert pod["volumes"] == [{"name": "models", "configMap": {"name": "hatswarm-models"}}]
    svc = next(
        o for o in objs if o["metadata"]["name"] == "t-hatswarm-models" and o["kind"] == "Service"
    )
    assert svc["spec"]["ports"][0]["port"] == 80
    policies = {p["metadata"]["name"]: p["spec"] for p in _by_kind(objs, "NetworkPolicy")}
    store = policies["t-hatswarm-models"]
    assert store["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "hatswarm-agent"}}}
    ]
    agents_out = policies["t-hatswarm-agents"]["egress"]
    assert {
        "to": [
            {
                "podSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/name": "hatswarm-models",
                        "app.kubernetes.io/instance": "t",
                    }
                }
            }
        ],
        "ports": [{"port": "http", "protocol": "TCP"}],
    } in agents_out
    pvc = next(
        o
        for o in render(FULL_VALUES)
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "t-hatswarm-models"
    )
    assert pvc["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "factory-models",
        "readOnly": True,
    }


def test_network_policies_follow_every_pool_port_and_both_monitoring_stacks(render: Render) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in _by_kind(render(), "NetworkPolicy")}
    op, agents = policies["t-hatswarm-operator"], policies["t-hatswarm-agents"]
    # operator -> agents and agent -> agent by the port's name: whatever port each pool sets
    assert op["egress"][-1]["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert agents["egress"][1]["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    # artifacts: http:// and https:// as the CRD allows
    assert agents["egress"][-1]["ports"] == [
        {"port": 80, "protocol": "TCP"},
        {"port": 443, "protocol": "TCP"},
    ]
    metrics_from = agents["ingress"][1]["from"][0]["namespaceSelector"]["matchExpressions"][0]
    assert metrics_from["values"] == ["monitoring", "cattle-monitoring-system"]  # k3s/Rancher
    any_port = {
        p["metadata"]["name"]: p["spec"] for p in _by_kind(render(FULL_VALUES), "NetworkPolicy")
    }
    assert "ports" not in any_port["t-hatswarm-agents"]["egress"][-1]  # agentEgressPorts: []


def test_uninstall_hook_stops_the_operator_then_releases_finalizers(render: Render) -> None:
    objs = render(FULL_VALUES)
    hooks = [
        o
        for o in objs
        if (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == "pre-delete"
    ]
    kinds = sorted(o["kind"] for o in hooks)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Job",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    job = next(o for o in hooks if o["kind"] == "Job")
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooks}
    assert all(weights[k] < weights["Job"] for k in weights if k != "Job")  # RBAC first
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/hatswarm/operator:0.1.0"
    assert c["command"] == ["python3", "-m", "hatswarm_operator.kube.uninstall"]
    args = uninstall.build_parser().parse_args(c["args"])  # what the module accepts
    assert args.deployment == "t-hatswarm-operator" and args.namespace == "hatswarm"
    assert args.selector == "app.kubernetes.io/instance=t,app.kubernetes.io/name=hatswarm-operator"
    assert args.watch_namespace == ["factory", "floor-*"]
    deployment = next(
        o
        for o in objs
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "t-hatswarm-operator"
    )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels[k] == v for k, v in (kv.split("=") for kv in args.selector.split(",")))
    cluster_role = next(o for o in hooks if o["kind"] == "ClusterRole")
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["hatswarm.io"],
            "resources": ["edgemodels", "inferencepools"],
            "verbs": ["get", "list", "patch"],
        }
    ]
    role = next(o for o in hooks if o["kind"] == "Role")
    assert role["rules"][0]["resourceNames"] == ["t-hatswarm-operator"]
    assert not [o for o in render(sets=["uninstallHook.enabled=false"]) if o["kind"] == "Job"]


def test_helm_test_checks_the_operator_and_the_pool(render: Render) -> None:
    objs = render(sets=["pool.enabled=true"])
    pod = next(o for o in objs if o["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    compile(script, "helm-test", "exec")  # valid Python
    assert "http://t-hatswarm-operator-metrics.hatswarm.svc:9100/metrics" in script
    assert '("floor-1.hatswarm.svc", 8001)' in script
    policies = {p["metadata"]["name"]: p["spec"] for p in _by_kind(objs, "NetworkPolicy")}
    assert {"podSelector": {"matchLabels": {"hatswarm.io/helm-test": "true"}}} in policies[
        "t-hatswarm-operator"
    ]["ingress"][0]["from"]


def test_values_are_documented_in_the_readme_table() -> None:
    """Every value has a description in values.schema.json, and the README's table is the one
    tools/chart_values_table.py generates from it."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "chart_values_table.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    readme = (CHART / "README.md").read_text()
    for key in ("devicePlugin.enabled", "modelStore.configMap", "agentDefaults.imagePullSecrets"):
        assert f"| `{key}` |" in readme


def test_the_api_default_agent_resources_are_the_charts() -> None:
    """A pool applied without the chart gets the agent container the chart would give it: the
    limit also caps placement, so two defaults would place differently."""
    from hatswarm_operator.api.inferencepool import AgentSettings

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = values["agentDefaults"]["resources"]
    assert AgentSettings().resources == chart
