"""The ``kubernetes`` python client against the emulator: list/watch, conflicts, GC, hooks."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.integration.kubeemu.widgets import widget
from tests.kubeemu import KubeApi, ResourceType

pytestmark = pytest.mark.integration
JSON_PATCH = "application/json-patch+json"


@pytest.fixture
def api(kube_api: KubeApi) -> Iterator[Any]:
    api_client = kube_api.api_client()
    try:
        yield api_client
    finally:
        api_client.close()


def pod(name: str, node: str = "pi-1", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "agent:1"}]},
    }


def test_list_then_watch_from_the_list_resource_version(kube_api: KubeApi, api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod("default", pod("a", app="agent"))
    listed = core.list_namespaced_pod("default", label_selector="app=agent")
    assert [p.metadata.name for p in listed.items] == ["a"]
    since = listed.metadata.resource_version

    core.create_namespaced_pod("default", pod("b", app="agent"))
    core.create_namespaced_pod("default", pod("other", app="web"))
    core.patch_namespaced_pod("b", "default", {"metadata": {"labels": {"ready": "yes"}}})
    core.delete_namespaced_pod("a", "default")

    events = []
    watcher = watch.Watch()
    for event in watcher.stream(
        core.list_namespaced_pod,
        "default",
        label_selector="app=agent",
        resource_version=since,
        timeout_seconds=10,
    ):
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 3:
            watcher.stop()
    assert events == [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "a")]
    versions = [int(p.metadata.resource_version) for p in core.list_pod_for_all_namespaces().items]
    assert all(v > int(since) for v in versions)


def test_selectors_cluster_wide_and_namespaced(kube_api: KubeApi, api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "edge"}})
    core.create_namespaced_pod("default", pod("a", node="pi-1", tier="npu"))
    core.create_namespaced_pod("edge", pod("b", node="pi-2", tier="cpu"))
    core.create_namespaced_pod("edge", pod("c", node="pi-2"))

    def names(**kwargs: Any) -> list[str]:
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kwargs).items)

    assert names() == ["a", "b", "c"]
    assert names(label_selector="tier in (npu,cpu)") == ["a", "b"]
    assert names(label_selector="tier notin (npu)") == ["b", "c"]
    assert names(label_selector="!tier") == ["c"]
    assert names(label_selector="tier,tier!=cpu") == ["a"]
    assert names(field_selector="spec.nodeName=pi-2,metadata.name!=b") == ["c"]
    assert names(field_selector="metadata.namespace=edge") == ["b", "c"]
    assert names(field_selector="status.phase=Pending") == ["a", "b", "c"]
    assert [p.metadata.name for p in core.list_namespaced_pod("edge").items] == ["b", "c"]


def test_watch_older_than_history_is_410_gone(kube_api: KubeApi, api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod("default", pod("a"))
    since = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", pod("b"))
    kube_api.store.compact()
    with pytest.raises(ApiException) as gone:
        for _ in watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version=since, timeout_seconds=1
        ):
            pass
    assert gone.value.status == 410


def test_watch_bookmarks_and_timeout(kube_api: KubeApi) -> None:
    kube_api.server.bookmark_interval = 0.1
    url = (
        f"{kube_api.url}/api/v1/namespaces/default/pods"
        "?watch=true&allowWatchBookmarks=true&timeoutSeconds=2&resourceVersion=1"
    )
    kube_api.store.put(pod("a"))
    types = []
    with urllib.request.urlopen(url, timeout=10) as stream:
        for line in stream:
            event = json.loads(line)
            types.append(event["type"])
            if event["type"] == "BOOKMARK":
                assert int(event["object"]["metadata"]["resourceVersion"]) >= 1
                assert event["object"]["kind"] == "Pod"
                break
    assert types[0] == "ADDED"
    assert types[-1] == "BOOKMARK"

    quiet = f"{kube_api.url}/api/v1/nodes?watch=true&timeoutSeconds=1"
    with urllib.request.urlopen(quiet, timeout=10) as stream:
        assert stream.read() == b""  # ended by the server after timeoutSeconds


def test_conflicts_and_json_patch_test(kube_api: KubeApi, api: Any, widgets: ResourceType) -> None:
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", widget("w1")
    )
    version = created["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", "w1", {"spec": {"replicas": 2}}
    )

    stale_test = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/x"]},
    ]
    with pytest.raises(ApiException) as invalid:
        custom.patch_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", "w1", stale_test, _content_type=JSON_PATCH
        )
    assert invalid.value.status == 422

    stale_merge = {"metadata": {"resourceVersion": version}, "spec": {"replicas": 3}}
    with pytest.raises(ApiException) as conflict:
        custom.patch_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", "w1", stale_merge
        )
    assert conflict.value.status == 409

    created["spec"]["replicas"] = 4
    with pytest.raises(ApiException) as replaced:
        custom.replace_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", "w1", created
        )
    assert replaced.value.status == 409
    assert json.loads(replaced.value.body)["reason"] == "Conflict"

    fresh = custom.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1")
    stale_test[0]["value"] = fresh["metadata"]["resourceVersion"]
    patched = custom.patch_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", "w1", stale_test, _content_type=JSON_PATCH
    )
    assert patched["metadata"]["finalizers"] == ["example.com/x"]


def test_invalid_custom_object_is_422_with_causes(
    kube_api: KubeApi, api: Any, widgets: ResourceType
) -> None:
    custom = client.CustomObjectsApi(api)
    body = widget("w1", replicas="many")
    del body["spec"]["size"]
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", body)
    status = json.loads(invalid.value.body)
    assert invalid.value.status == 422
    assert status["reason"] == "Invalid"
    assert {c["field"] for c in status["details"]["causes"]} == {"spec.size", "spec.replicas"}
    assert 'Widget.example.com "w1" is invalid' in status["message"]


def test_generate_name_and_events(kube_api: KubeApi, api: Any) -> None:
    core = client.CoreV1Api(api)
    event = core.create_namespaced_event(
        "default",
        {
            "metadata": {"generateName": "kopf-event-"},
            "involvedObject": {"kind": "Widget", "name": "w1", "namespace": "default"},
            "reason": "Logging",
            "message": "hello",
            "type": "Normal",
        },
    )
    assert event.metadata.name.startswith("kopf-event-")
    assert len(event.metadata.name) == len("kopf-event-") + 5
    assert [e.message for e in core.list_namespaced_event("default").items] == ["hello"]


def test_deleting_an_owner_collects_its_dependents(
    kube_api: KubeApi, widgets: ResourceType
) -> None:
    store = kube_api.store
    owner = store.put(widget("pool"))
    other = store.put(widget("other"))

    def ref(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
        }

    owned = {"namespace": "default", "ownerReferences": [ref(owner)]}
    store.put(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "pool-agents", **owned},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {}},
        }
    )
    store.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pool", **owned}})
    shared = {"namespace": "default", "ownerReferences": [ref(owner), ref(other)]}
    store.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "both", **shared}})

    kube_api.kubectl("delete", "widget", "pool", check=True)
    assert store.find("DaemonSet") == []
    assert store.find("Service") == []
    remaining = store.find("ConfigMap")
    assert [c["metadata"]["name"] for c in remaining] == ["both"]
    assert [r["name"] for r in remaining[0]["metadata"]["ownerReferences"]] == ["other"]


def test_deleting_a_namespace_deletes_its_content(kube_api: KubeApi, api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "edge"}})
    core.create_namespaced_pod("edge", pod("a"))
    held = pod("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_pod("edge", held)
    core.delete_namespace("edge")
    assert core.read_namespace("edge").status.phase == "Terminating"
    with pytest.raises(ApiException) as forbidden:
        core.create_namespaced_pod("edge", pod("late"))
    assert forbidden.value.status == 403
    assert [p.metadata.name for p in core.list_namespaced_pod("edge").items] == ["held"]
    core.patch_namespaced_pod("held", "edge", {"metadata": {"finalizers": None}})
    assert [n.metadata.name for n in core.list_namespace().items if n.metadata.name == "edge"] == []


def test_deleting_a_crd_removes_its_objects_and_discovery(
    kube_api: KubeApi, api: Any, widgets: ResourceType
) -> None:
    kube_api.store.put(widget("w1"))
    ext = client.ApiextensionsV1Api(api)
    ext.delete_custom_resource_definition("widgets.example.com")
    assert kube_api.store.find("Widget") == []
    groups = [g.name for g in client.ApisApi(api).get_api_versions().groups]
    assert "example.com" not in groups


def test_hooks_let_a_test_play_the_daemonset_controller(kube_api: KubeApi, api: Any) -> None:
    store = kube_api.store

    def schedule(event: str, rt: ResourceType, ds: dict[str, Any]) -> None:
        name = ds["metadata"]["name"]
        store.put(pod(f"{name}-pi-1", app=name))

    remove = store.add_hook(schedule, kind="DaemonSet")
    client.AppsV1Api(api).create_namespaced_daemon_set(
        "default",
        {
            "metadata": {"name": "agents"},
            "spec": {
                "selector": {"matchLabels": {"app": "agents"}},
                "template": {
                    "metadata": {"labels": {"app": "agents"}},
                    "spec": {"containers": [{"name": "agent", "image": "agent:1"}]},
                },
            },
        },
    )
    remove()
    found = store.wait_for(lambda s: s.find("Pod", "default", app="agents"), timeout=5)
    assert [p["metadata"]["name"] for p in found] == ["agents-pi-1"]
