"""The Helm chart, offline: lint, render, schema-check, security defaults, RBAC, values schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.operator.api.schemacheck import validate as validate_cr

from .conftest import CHART, CRD_KINDS, FULL_VALUES, ROOT, Render, run_template

VARIANTS = {"default": [], "full": [FULL_VALUES]}


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


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_pass_kubernetes_validate(render: Render, variant: str) -> None:
    """Every built-in kind passes kubernetes-validate --strict (CRD-typed kinds are skipped:
    its schemas are Kubernetes' own; the InferencePool is checked against our CRD below)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    core = [o for o in render(*VARIANTS[variant]) if o["kind"] not in CRD_KINDS]
    assert len(core) >= 10
    errors = []
    for version in ("1.29.0", "1.37.0"):  # k3s on a Pi today, and the newest schema
        for obj in core:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {err.message}")
    assert errors == []


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
    agent = default["spec"]["agent"]
    assert agent["image"] == "ghcr.io/hatswarm/agent:0.1.0"
    assert agent["npu"] == {"resourceName": "hailo.ai/h8l", "hostDevice": False}


def test_pool_agent_overrides_defaults(render: Render) -> None:
    pool = _one(render(FULL_VALUES), "InferencePool")
    agent = pool["spec"]["agent"]
    assert agent["cacheSize"] == "4Gi"
    assert agent["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }  # a pool's resources replace the defaults whole, never mixed
    assert agent["npu"]["deviceFile"] == "/dev/hailo0"
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


def test_agent_defaults_config(render: Render) -> None:
    cm = next(o for o in render() if o["kind"] == "ConfigMap")
    defaults = yaml.safe_load(cm["data"]["agent-defaults.yaml"])
    assert defaults["npu"] == {"resourceName": "hailo.ai/h8l", "hostDevice": False}
    assert defaults["backend"] == "hailo"
    assert defaults["cacheSize"] == "2Gi"
    assert defaults["resources"]["limits"]["memory"] == "2Gi"  # a 4 GB Pi 5 keeps headroom
    env = _one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HATSWARM_AGENT_DEFAULTS", "value": "/etc/hatswarm/agent-defaults.yaml"} in env


# --- security --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_security_defaults_on_every_pod(render: Render, variant: str) -> None:
    for obj in render(*VARIANTS[variant]):
        if obj["kind"] not in {"Deployment", "DaemonSet", "StatefulSet", "Job"}:
            continue
        pod = obj["spec"]["template"]["spec"]
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
    role = _one(render(*VARIANTS[variant]), "ClusterRole")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
    for (group, res), verbs in granted.items():
        assert "delete" not in verbs and "deletecollection" not in verbs, (group, res)
        assert "escalate" not in verbs and "bind" not in verbs and "impersonate" not in verbs
    # Each pool's generated tokens are created when absent; never updated or deleted.
    assert granted[("", "secrets")] == {"get", "create"}
    assert granted[("", "nodes")] == {"get", "list"}
    assert granted[("apps", "daemonsets")] == {"get", "create", "patch"}
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
