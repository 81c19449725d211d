"""The real kubectl binary against the emulator: CRDs, printer columns, apply, scale, delete."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.integration.kubeemu.widgets import widget
from tests.kubeemu import KubeApi, ResourceType

pytestmark = pytest.mark.integration


def test_applied_crd_is_discovered_and_printed_with_its_columns(
    kube_api: KubeApi, widget_crd: dict[str, Any]
) -> None:
    kube_api.apply(widget_crd)
    resources = kube_api.kubectl("api-resources", "--api-group=example.com", check=True)
    assert "widgets" in resources.stdout
    assert "wd" in resources.stdout

    kube_api.apply(widget("w1", replicas=2))
    rt = kube_api.store.type_for("example.com/v1", "Widget")
    kube_api.store.patch(
        rt,
        "default",
        "w1",
        "merge",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status",
    )
    table = kube_api.kubectl("get", "wd", check=True).stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "REPLICAS", "READY", "AGE"]
    name, size, replicas, ready, age = table[1].split()
    assert (name, size, replicas, ready) == ("w1", "small", "2", "True")
    assert age.endswith("s")
    crds = kube_api.kubectl("get", "crd", check=True).stdout
    assert "widgets.example.com" in crds
    everything = kube_api.kubectl("get", "all", "-A", check=True).stdout
    assert "widget.example.com/w1" in everything


def test_apply_again_patches_and_bumps_generation(kube_api: KubeApi, widgets: ResourceType) -> None:
    first = kube_api.apply(widget("w1"))
    assert "created" in first.stdout
    again = kube_api.apply(widget("w1", size="large", replicas=4))
    assert "configured" in again.stdout
    obj = kube_api.store.get(widgets, "default", "w1")
    assert obj["spec"] == {"size": "large", "replicas": 4}
    assert obj["metadata"]["generation"] == 2
    unchanged = kube_api.apply(widget("w1", size="large", replicas=4))
    assert "unchanged" in unchanged.stdout
    assert (
        kube_api.store.get(widgets, "default", "w1")["metadata"]["resourceVersion"]
        == (obj["metadata"]["resourceVersion"])
    )


def test_scale_and_status_subresources(kube_api: KubeApi, widgets: ResourceType) -> None:
    kube_api.apply(widget("w1"))
    assert kube_api.store.get(widgets, "default", "w1")["spec"]["replicas"] == 1  # defaulted
    kube_api.kubectl("scale", "widget", "w1", "--replicas=3", check=True)
    after_scale = kube_api.store.get(widgets, "default", "w1")
    assert after_scale["spec"]["replicas"] == 3
    assert after_scale["metadata"]["generation"] == 2

    status = {"status": {"replicas": 3, "phase": "Ready"}}
    kube_api.kubectl(
        "patch",
        "wd",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
        check=True,
    )
    kube_api.kubectl("patch", "wd", "w1", "--type=merge", "-p", '{"status":{"phase":"Lost"}}')
    got = json.loads(kube_api.kubectl("get", "wd", "w1", "-o", "json", check=True).stdout)
    assert got["status"] == {"replicas": 3, "phase": "Ready"}  # main writes ignore status
    assert got["metadata"]["generation"] == 2  # status writes do not bump it
    scale = kube_api.store.get_scale(widgets, "default", "w1")
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["replicas"] == 3


def test_schema_invalid_widget_is_refused_naming_the_field(
    kube_api: KubeApi, widgets: ResourceType
) -> None:
    bad = kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(widget("w1", replicas=20)))
    assert bad.returncode != 0
    assert "spec.replicas: Invalid value: 20" in bad.stderr
    assert "less than or equal to 10" in bad.stderr

    wrong_enum = kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(widget("w2", "huge")))
    assert 'spec.size: Unsupported value: "huge"' in wrong_enum.stderr

    cel = kube_api.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(widget("w3", replicas=1, minReplicas=2))
    )
    assert "minReplicas must not exceed replicas" in cel.stderr
    assert kube_api.store.find("Widget") == []

    typo = kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(widget("ok", junk=1)))
    assert 'strict decoding error: unknown field "spec.junk"' in typo.stderr
    warned = kube_api.kubectl(
        "apply", "--validate=warn", "-f", "-", input=yaml.safe_dump(widget("ok", junk=1))
    )
    assert 'unknown field "spec.junk"' in warned.stderr
    assert "junk" not in kube_api.store.get(widgets, "default", "ok")["spec"]  # pruned


def test_delete_waits_for_finalizers(kube_api: KubeApi, widgets: ResourceType) -> None:
    manifest = widget("w1")
    manifest["metadata"]["finalizers"] = ["example.com/hold"]
    kube_api.apply(manifest)
    kube_api.kubectl("delete", "wd", "w1", "--wait=false", check=True)
    held = kube_api.store.get(widgets, "default", "w1")
    assert held["metadata"]["deletionTimestamp"]
    no_new = kube_api.kubectl(
        "patch",
        "wd",
        "w1",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/more"}]',
    )
    assert no_new.returncode != 0
    assert "no new finalizers" in no_new.stderr
    kube_api.kubectl(
        "patch", "wd", "w1", "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=True
    )
    assert kube_api.store.find("Widget") == []
    gone = kube_api.kubectl("get", "wd", "w1")
    assert 'widgets.example.com "w1" not found' in gone.stderr


def test_replace_conflicts_on_a_stale_resource_version(
    kube_api: KubeApi, widgets: ResourceType
) -> None:
    kube_api.apply(widget("w1"))
    stale = json.loads(kube_api.kubectl("get", "wd", "w1", "-o", "json", check=True).stdout)
    kube_api.store.patch(widgets, "default", "w1", "merge", {"spec": {"replicas": 2}})
    stale["spec"]["replicas"] = 5
    refused = kube_api.kubectl("replace", "-f", "-", input=json.dumps(stale))
    assert refused.returncode != 0
    assert "the object has been modified" in refused.stderr
    del stale["metadata"]["resourceVersion"]
    kube_api.kubectl("replace", "-f", "-", input=json.dumps(stale), check=True)
    assert kube_api.store.get(widgets, "default", "w1")["spec"]["replicas"] == 5


def test_server_side_apply_is_refused_clearly(kube_api: KubeApi, widgets: ResourceType) -> None:
    refused = kube_api.kubectl(
        "apply", "--server-side", "-f", "-", input=yaml.safe_dump(widget("w1"))
    )
    assert refused.returncode != 0
    assert "server-side apply" in refused.stderr


def test_builtin_kinds_print_and_select(kube_api: KubeApi) -> None:
    kube_api.store.put(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "pi-1", "labels": {"hatswarm.io/accelerator": "hailo8l"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    for name, node in (("agent-a", "pi-1"), ("agent-b", "pi-2")):
        kube_api.store.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "agent"}},
                "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "x"}]},
                "status": {"phase": "Running"},
            }
        )
    nodes = kube_api.kubectl("get", "nodes", check=True).stdout
    assert "pi-1" in nodes
    assert "Ready" in nodes
    pods = kube_api.kubectl(
        "get", "pods", "-l", "app=agent", "--field-selector", "spec.nodeName=pi-2", check=True
    ).stdout.splitlines()
    assert len(pods) == 2
    assert pods[1].split()[0] == "agent-b"
    assert "Running" in pods[1]
    # `kubectl create namespace|configmap ...` generators send protobuf (refused with 415);
    # `create -f` / `apply` send JSON.
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge"}}
    kube_api.kubectl("create", "-f", "-", input=json.dumps(namespace), check=True)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "edge"},
        "data": {"a": "b"},
    }
    kube_api.apply(config_map)
    assert kube_api.store.find("ConfigMap", "edge")[0]["data"] == {"a": "b"}
