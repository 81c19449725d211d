"""The emulator's own building blocks, without HTTP: patches, JSONPath, watch semantics."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.integration.kubeemu.widgets import WIDGET_CRD, widget
from tests.kubeemu import ApiError, ResourceType, Store
from tests.kubeemu.patches import PatchTestError, json_patch, merge_patch, strategic_merge_patch
from tests.kubeemu.tables import jsonpath


def test_json_patch_operations_and_test() -> None:
    doc = {"metadata": {"resourceVersion": "5", "finalizers": ["a"]}, "spec": {"x": 1}}
    out = json_patch(
        doc,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "5"},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
            {"op": "replace", "path": "/spec/x", "value": 2},
            {"op": "copy", "from": "/spec/x", "path": "/spec/y"},
            {"op": "move", "from": "/spec/y", "path": "/spec/z"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ],
    )
    assert out == {
        "metadata": {"resourceVersion": "5", "finalizers": ["b"]},
        "spec": {"x": 2, "z": 2},
    }
    assert doc["spec"] == {"x": 1}  # the input is untouched
    with pytest.raises(PatchTestError):
        json_patch(doc, [{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}])


def test_merge_and_strategic_merge_patches() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) == {
        "a": {"c": 2},
        "l": [2],
    }
    current = {
        "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
        "tolerations": [{"key": "x"}],
    }
    patched = strategic_merge_patch(
        current,
        {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
            "containers": [
                {"name": "a", "image": "a:2"},
                {"name": "c", "image": "c:1"},
                {"name": "b", "$patch": "delete"},
            ],
            "tolerations": [{"key": "y"}],
        },
    )
    assert patched == {
        "containers": [{"name": "a", "image": "a:2"}, {"name": "c", "image": "c:1"}],
        "tolerations": [{"key": "y"}],
    }


def test_jsonpath_subset() -> None:
    obj: dict[str, Any] = {
        "spec": {"replicas": 3, "items": [{"n": "a"}, {"n": "b"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "X"}]},
    }
    assert jsonpath(obj, ".spec.replicas") == [3]
    assert jsonpath(obj, "{.spec.items[1].n}") == ["b"]
    assert jsonpath(obj, ".spec.items[*].n") == ["a", "b"]
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["False"]
    assert jsonpath(obj, ".spec.missing") == []


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def widgets(store: Store) -> ResourceType:
    store.put(WIDGET_CRD)
    return store.type_for("example.com/v1", "Widget")


def test_no_op_writes_keep_the_resource_version_and_emit_nothing(
    store: Store, widgets: ResourceType
) -> None:
    created = store.put(widget("w1"))
    events: list[str] = []
    store.watch(
        widgets, "default", lambda t, _o: events.append(t), since=str(store.resource_version)
    )
    same = store.patch(widgets, "default", "w1", "merge", {"spec": {"size": "small"}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert events == []


def test_generation_counts_spec_changes_only(store: Store, widgets: ResourceType) -> None:
    store.put(widget("w1"))
    store.patch(widgets, "default", "w1", "merge", {"metadata": {"labels": {"a": "b"}}})
    store.patch(widgets, "default", "w1", "merge", {"status": {"phase": "X"}}, subresource="status")
    assert store.get(widgets, "default", "w1")["metadata"]["generation"] == 1
    store.patch(widgets, "default", "w1", "merge", {"spec": {"replicas": 2}})
    assert store.get(widgets, "default", "w1")["metadata"]["generation"] == 2


def test_watchers_see_objects_enter_and_leave_their_selection(
    store: Store, widgets: ResourceType
) -> None:
    seen: list[tuple[str, str]] = []
    store.watch(
        widgets,
        None,
        lambda t, o: seen.append((t, o["metadata"]["name"])),
        label_selector="team=edge",
    )
    store.put(widget("w1"))
    store.patch(widgets, "default", "w1", "merge", {"metadata": {"labels": {"team": "edge"}}})
    store.patch(widgets, "default", "w1", "merge", {"metadata": {"labels": {"team": "core"}}})
    assert seen == [("ADDED", "w1"), ("DELETED", "w1")]


def test_initial_events_end_with_a_bookmark(store: Store, widgets: ResourceType) -> None:
    store.put(widget("w1"))
    seen: list[tuple[str, dict[str, Any]]] = []
    store.watch(
        widgets,
        None,
        lambda t, o: seen.append((t, o)),
        since=str(store.resource_version),
        send_initial_events=True,
    )
    assert [t for t, _ in seen] == ["ADDED", "BOOKMARK"]
    assert seen[1][1]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_bounded_history_expires_old_resource_versions(store: Store, widgets: ResourceType) -> None:
    store.history_size = 3
    start = str(store.resource_version)
    for n in range(5):
        store.put(widget(f"w{n}"))
    with pytest.raises(ApiError) as gone:
        store.watch(widgets, None, lambda _t, _o: None, since=start)
    assert gone.value.code == 410
    recent: list[str] = []
    store.watch(
        widgets,
        None,
        lambda _t, o: recent.append(o["metadata"]["name"]),
        since=str(store.resource_version - 2),
    )
    assert recent == ["w3", "w4"]


def test_hooks_fire_after_commit(store: Store, widgets: ResourceType) -> None:
    seen: list[str] = []
    store.add_hook(
        lambda t, rt, o: seen.append(f"{t} {rt.kind} {o['metadata']['name']}"),
        kind="Widget",
        events=("ADDED", "DELETED"),
    )
    store.put(widget("w1"))
    store.delete(widgets, "default", "w1")
    assert seen == ["ADDED Widget w1", "DELETED Widget w1"]


def test_list_map_keys_must_be_unique() -> None:
    store = Store()
    crd = copy.deepcopy(WIDGET_CRD)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["ports"] = {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }
    store.put(crd)
    with pytest.raises(ApiError) as invalid:
        store.put(widget("w1", ports=[{"name": "a", "port": 1}, {"name": "a", "port": 2}]))
    assert invalid.value.code == 422
    assert 'spec.ports[1]: Duplicate value: map[string]interface {}{"name":"a"}' in str(
        invalid.value
    )


def test_field_validation_modes(store: Store, widgets: ResourceType) -> None:
    with pytest.raises(ApiError) as strict, store.field_validation("Strict"):
        store.put(widget("w1", junk=1))
    assert strict.value.code == 400
    with store.field_validation("Warn") as warnings:
        store.put(widget("w1", junk=1))
    assert warnings == ['unknown field "spec.junk"']
