"""Registry version resolution, the routing-table store and the CLI's model specs."""

from __future__ import annotations

import argparse

import pytest
from hatswarm_agent.cli import parse_model
from hatswarm_agent.control.lifecycle import same_request
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.table import RoutingTableStore
from hatswarm_agent.serving.errors import ModelNotFoundError, ModelNotReadyError
from hatswarm_agent.serving.registry import ModelRegistry, ModelVersion, version_key


def entry(name: str, version: str, state: int = control_pb2.MODEL_STATE_READY) -> ModelVersion:
    req = control_pb2.LoadModelRequest(name=name, version=version, uri="/m.onnx")
    return ModelVersion(name, version, req, "onnxruntime", state=state, reason="boom")


def test_empty_version_is_newest_ready_numeric_first() -> None:
    reg = ModelRegistry()
    for v in ["2", "10", "beta"]:
        reg.put(entry("m", v))
    reg.put(entry("m", "11", control_pb2.MODEL_STATE_FAILED))
    assert sorted(["beta", "10", "2"], key=version_key) == ["2", "10", "beta"]
    assert reg.get("m").version == "beta"
    assert reg.get("m", "2").version == "2"
    assert reg.ready_versions("m") == ["2", "10", "beta"]
    with pytest.raises(ModelNotReadyError, match="MODEL_STATE_FAILED: boom"):
        reg.get("m", "11")
    with pytest.raises(ModelNotFoundError, match="unknown version '3'"):
        reg.get("m", "3")
    with pytest.raises(ModelNotFoundError, match="unknown model 'x'"):
        reg.get("x")
    assert [e.version for e in reg.remove("m", "2")] == ["2"]
    assert len(reg.remove("m")) == 3
    assert reg.names() == []


def test_routing_table_ignores_older_generations() -> None:
    store = RoutingTableStore()
    assert store.set(control_pb2.RoutingTable(generation=5, retries=1)) == 5
    assert store.set(control_pb2.RoutingTable(generation=4, retries=9)) == 5
    assert store.table.retries == 1
    assert store.set(control_pb2.RoutingTable(generation=6)) == 6


def test_parse_model_spec() -> None:
    req = parse_model("cnn:3=/m/cnn.onnx#sha256=ABCD", "simulated", {"profile": "yolov8s"})
    assert (req.name, req.version, req.uri, req.sha256, req.backend) == (
        "cnn", "3", "/m/cnn.onnx", "abcd", "simulated",
    )  # fmt: skip
    assert dict(req.options) == {"profile": "yolov8s"}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_model("no-equals", "", {})
    with pytest.raises(argparse.ArgumentTypeError):
        parse_model("m=/x#md5=1", "", {})


def test_same_request_decides_idempotent_loads() -> None:
    a = control_pb2.LoadModelRequest(name="m", uri="/a", sha256="AB")
    assert same_request(a, control_pb2.LoadModelRequest(name="m", uri="/b", sha256="ab"))
    assert not same_request(a, control_pb2.LoadModelRequest(name="m", uri="/a", sha256="cd"))
    assert not same_request(
        a, control_pb2.LoadModelRequest(name="m", uri="/a", sha256="ab", options={"k": "v"})
    )
