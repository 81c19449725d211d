"""What watch-fed clients depend on at scale: paged lists over a consistent snapshot, 410 on
an expired continue token or resourceVersion, the request log's counts, and the emulator run
as a program of its own (`python -m tests.kubeemu`)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.kubeemu import KubeApi, Store

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def core(kube_api: KubeApi) -> Iterator[Any]:
    api_client = kube_api.api_client()
    try:
        yield client.CoreV1Api(api_client)
    finally:
        api_client.close()


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def test_pages_show_the_first_pages_snapshot(kube_api: KubeApi, core: Any) -> None:
    for i in range(5):
        kube_api.store.put(node(f"n{i}"))
    first = core.list_node(limit=2)
    assert [n.metadata.name for n in first.items] == ["n0", "n1"]
    assert first.metadata.remaining_item_count == 3 and first.metadata._continue
    snapshot = first.metadata.resource_version

    # Changes between pages do not show: the next pages are as of the first page's version.
    rt = kube_api.store.type_for("v1", "Node")
    kube_api.store.delete(rt, None, "n3")
    kube_api.store.put(node("n5"))
    kube_api.store.patch(rt, None, "n2", "merge", {"metadata": {"labels": {"late": "yes"}}})
    second = core.list_node(limit=2, _continue=first.metadata._continue)
    assert [n.metadata.name for n in second.items] == ["n2", "n3"]
    assert second.items[0].metadata.labels is None  # n2 as it was
    assert second.metadata.resource_version == snapshot
    third = core.list_node(limit=2, _continue=second.metadata._continue)
    assert [n.metadata.name for n in third.items] == ["n4"]
    assert not third.metadata._continue and third.metadata.remaining_item_count is None
    # A new list sees the present.
    assert [n.metadata.name for n in core.list_node().items] == ["n0", "n1", "n2", "n4", "n5"]

    # A continue token older than the history is 410 Gone: start a new list.
    token = core.list_node(limit=1).metadata._continue
    kube_api.store.put(node("n6"))
    kube_api.store.compact()
    with pytest.raises(ApiException) as gone:
        core.list_node(limit=1, _continue=token)
    assert gone.value.status == 410 and "too old" in gone.value.body


def test_selectors_apply_before_the_limit(kube_api: KubeApi, core: Any) -> None:
    for i in range(6):
        labels = {"tier": "npu" if i % 2 else "cpu"}
        kube_api.store.put({**node(f"n{i}"), "metadata": {"name": f"n{i}", "labels": labels}})
    page = core.list_node(label_selector="tier=npu", limit=2)
    assert [n.metadata.name for n in page.items] == ["n1", "n3"]
    rest = core.list_node(label_selector="tier=npu", limit=2, _continue=page.metadata._continue)
    assert [n.metadata.name for n in rest.items] == ["n5"]


def test_request_counts_by_verb_and_resource(kube_api: KubeApi, core: Any) -> None:
    kube_api.store.put(node("n0"))
    kube_api.server.counts(reset=True)
    core.list_node()
    core.list_node(limit=1)
    core.read_node("n0")
    core.patch_node("n0", {"metadata": {"labels": {"a": "b"}}})
    core.patch_node_status("n0", {"status": {"phase": "Running"}})
    for _ in watch.Watch().stream(core.list_node, timeout_seconds=1):
        pass
    counts = kube_api.server.counts()
    assert counts.requests[("list", "nodes")] == 2
    assert counts.requests[("get", "nodes")] == 1
    assert counts.requests[("patch", "nodes")] == 1
    assert counts.requests[("patch", "nodes/status")] == 1
    assert counts.requests[("watch", "nodes")] == 1
    assert counts.watch_events["nodes"] == 1  # the initial ADDED
    assert counts.response_bytes[("list", "nodes")] > 100
    assert counts.total(("list", "get")) == 3


def test_changes_while_watches_are_down_need_a_relist(kube_api: KubeApi, core: Any) -> None:
    kube_api.store.put(node("n0"))
    kube_api.store.put(node("n1"))
    listed = core.list_node()
    since = listed.metadata.resource_version
    rt = kube_api.store.type_for("v1", "Node")

    def delete_n1(store: Store) -> None:
        store.delete(rt, None, "n1")

    kube_api.server.expire_watches(while_down=delete_n1)
    with pytest.raises(ApiException) as gone:
        for _ in watch.Watch().stream(core.list_node, resource_version=since, timeout_seconds=1):
            pass
    assert gone.value.status == 410
    assert [n.metadata.name for n in core.list_node().items] == ["n0"]


def test_the_emulator_runs_as_a_program(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    manifests = tmp_path / "nodes.yaml"
    manifests.write_text(yaml.safe_dump_all([node("pi-1"), node("pi-2")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kubeemu", "--kubeconfig", str(kubeconfig),
         "--load", str(manifests), "--load", str(ROOT / "crds")],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("kubeemu ready on http://127.0.0.1:"), line
        url = line.split()[3]
        token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]

        def call(path: str, body: Any = None) -> Any:
            req = urllib.request.Request(
                url + path,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())

        assert [n["metadata"]["name"] for n in call("/api/v1/nodes")["items"]] == ["pi-1", "pi-2"]
        assert call("/apis/hatswarm.io/v1alpha1/edgemodels")["items"] == []  # CRDs loaded
        ready = {**node("pi-3"), "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        assert call("/kubeemu/objects", [ready]) == {"put": 1}
        assert call("/api/v1/nodes/pi-3")["status"]["conditions"][0]["status"] == "True"
        counts = call("/kubeemu/counts?reset=true")
        assert ["list", "nodes", 1] in counts["requests"]
        assert ["get", "nodes", 1] in counts["requests"]
        assert call("/kubeemu/counts")["requests"] == []
    finally:
        proc.communicate(input="", timeout=20)  # stdin closed: it stops
    assert proc.returncode == 0
