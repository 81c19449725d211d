"""The kopf adapter's pure parts: Nodes + Pods -> NodeStates, status patches, the CLI."""

from __future__ import annotations

from typing import Any

import pytest
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.manifests import ManifestError
from hatswarm_operator.kube.handlers import parse_model, parse_pool
from hatswarm_operator.kube.main import build_parser
from hatswarm_operator.kube.sink import object_ref, status_patch
from hatswarm_operator.kube.sources import node_states, node_view, pod_view


def node(
    name: str, ready: str = "True", unschedulable: bool = False, **labels: str
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def pod(
    node_name: str, ip: str = "10.0.0.5", port: int | None = 8001, ready: str = "True", **meta: Any
) -> dict[str, Any]:
    ports = [{"name": "metrics", "containerPort": 9090}]
    if port is not None:
        ports.append({"name": "grpc", "containerPort": port})
    return {
        "metadata": {"name": f"agent-{node_name}", **meta},
        "spec": {"nodeName": node_name, "containers": [{"name": "agent", "ports": ports}]},
        "status": {
            "podIP": ip,
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


def test_node_states_from_nodes_and_agent_pods() -> None:
    nodes = [
        node("pi-1", line="a"),
        node("pi-2", ready="False"),
        node("pi-3", unschedulable=True),
        node("pi-4"),
        node("pi-5"),
        node("pi-6"),
    ]
    pods = [
        pod("pi-1"),
        pod("pi-2", ip="10.0.0.6"),
        pod("pi-3", ip="fd00::7"),
        pod("pi-4", port=None),  # no grpc port: not an agent we can reach
        pod("pi-5", deletionTimestamp="2026-01-01T00:00:00Z"),
        pod("pi-6", ready="False"),
        pod("pi-9"),  # its node is unknown
    ]
    views = {v.name: v for v in map(node_view, nodes)}
    states = {s.name: s for s in node_states(views, map(pod_view, pods))}
    assert sorted(states) == ["pi-1", "pi-2", "pi-3", "pi-6"]
    assert states["pi-1"].address == "10.0.0.5:8001"
    assert states["pi-1"].labels == {"line": "a"}
    assert states["pi-1"].k8s_ready and states["pi-1"].schedulable
    assert not states["pi-2"].k8s_ready
    assert states["pi-3"].address == "[fd00::7]:8001"
    assert not states["pi-3"].schedulable
    assert not states["pi-6"].k8s_ready
    assert not any(s.up for s in states.values()), "only an agent probe brings a node up"


def test_status_patch_clears_unset_top_level_fields_only() -> None:
    body = status_patch(EdgeModelStatus(phase="Ready", ready="1/1"))
    assert body["phase"] == "Ready"
    assert body["p99LatencyMs"] is None  # merge-patch null: removed from the object
    assert body["costPer1kUsd"] is None
    assert body["placements"] == []


def test_object_ref_carries_the_uid_when_known() -> None:
    assert object_ref("EdgeModel", "ns", "m", "u-1") == {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u-1"},
    }
    assert "uid" not in object_ref("EdgeModel", "ns", "m")["metadata"]


def test_parse_failures_name_the_field() -> None:
    art = {"accelerator": "cpu", "format": "onnx", "uri": "file:///m.onnx", "sha256": "a" * 64}
    body = {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": "twice", "namespace": "default"},
        "spec": {"pool": "p", "version": "1", "artifacts": [art, art]},
    }
    with pytest.raises(ManifestError, match=r"EdgeModel/twice: spec\.artifacts: .*one artifact"):
        parse_model(body)
    body["spec"]["artifacts"] = [art]
    assert parse_model(body).spec.pool == "p"
    with pytest.raises(ManifestError, match="kind"):
        parse_pool({**body, "kind": "Widget"})


def test_cli_defaults_to_peering_and_json_logs() -> None:
    args = build_parser().parse_args([])
    assert not args.standalone
    assert args.peering_name == "hatswarm"
    assert args.log_format == "json"
    args = build_parser().parse_args(["--standalone", "-n", "edge", "-n", "floor-*"])
    assert args.standalone and args.namespace == ["edge", "floor-*"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-A", "-n", "edge"])
