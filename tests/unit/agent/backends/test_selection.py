"""`--backend auto` and pinned backends: what the agent serves with on a node, and why.

HailoRT is the test double in tests/fakes (it can be each AI HAT+ chip, or installed with no
device on the bus); "no HailoRT at all" is the real state of this machine's Python.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hatswarm_agent.backends import artifact_format, select_backend
from hatswarm_agent.backends.base import BackendUnavailableError
from hatswarm_agent.control.lifecycle import Backends
from hatswarm_agent.protocol.v1 import control_pb2

FAKES = Path(__file__).resolve().parents[3] / "fakes"


@pytest.fixture
def hp(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.delitem(sys.modules, "hailo_platform", raising=False)
    monkeypatch.syspath_prepend(str(FAKES))
    module = importlib.import_module("hailo_platform")
    module.FAKE.reset()
    yield module
    sys.modules.pop("hailo_platform", None)


@pytest.fixture
def no_hailort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hailo_platform", None)  # import fails, as on a plain Pi


def test_auto_without_hailort_serves_on_the_cpu_and_says_why(no_hailort: None) -> None:
    selection = select_backend("auto", "hailo8l")
    assert selection.ready and selection.name == "onnxruntime" and selection.requested == "auto"
    assert selection.backend is not None and selection.backend.device_info().accelerator == "cpu"
    assert selection.reason.startswith("auto: serving on the CPU (hailo_platform (HailoRT)")
    assert "sudo apt install hailo-all" in selection.reason


@pytest.mark.parametrize("chip", ["hailo8l", "hailo8", "hailo10h"])
def test_auto_with_a_hailo_device_serves_on_it(hp: ModuleType, chip: str) -> None:
    hp.FAKE.use_chip(chip)
    selection = select_backend("auto", "cpu")  # the chip comes from HailoRT, not the flag
    assert selection.name == "hailo" and selection.backend is not None
    assert selection.backend.device_info().accelerator == chip
    assert selection.reason == f"auto: HailoRT opened a {chip}"
    selection.backend.close()


def test_auto_with_hailort_but_no_device_falls_back(hp: ModuleType) -> None:
    hp.FAKE.use_chip("none")
    selection = select_backend("auto", "hailo8")
    assert selection.name == "onnxruntime"
    assert "hailortcli scan" in selection.reason


def test_a_pinned_hailo_without_the_chip_is_a_selection_not_a_crash(no_hailort: None) -> None:
    selection = select_backend("hailo", "hailo8l")
    assert not selection.ready and selection.backend is None and selection.name == ""
    assert selection.reason.startswith("backend hailo unavailable: hailo_platform (HailoRT)")


def test_backends_keep_the_reason_and_fail_loads_with_it(no_hailort: None) -> None:
    backends = Backends("hailo", "hailo8l")
    assert backends.problem == ""  # nothing opened yet
    backends.select()
    assert "backend hailo unavailable" in backends.problem
    with pytest.raises(BackendUnavailableError, match="backend hailo unavailable"):
        backends.get()
    assert backends.device_info().accelerator == "hailo8l"  # the flag; the operator sees why
    # An ONNX artifact needs no NPU: it still runs on this node's CPU.
    onnx = control_pb2.LoadModelRequest(name="m", uri="file:///m/model.onnx")
    assert backends.for_load(onnx) == "onnxruntime"
    assert backends.get("onnxruntime").name == "onnxruntime"
    backends.close()


def test_onnx_artifacts_on_an_npu_node_run_on_onnxruntime(hp: ModuleType) -> None:
    hp.FAKE.use_chip("hailo8")
    backends = Backends("auto", "hailo8")
    hef = control_pb2.LoadModelRequest(name="d", uri="https://zoo/yolov8s.hef", format="hef")
    onnx = control_pb2.LoadModelRequest(name="c", uri="https://zoo/model", format="onnx")
    by_suffix = control_pb2.LoadModelRequest(name="s", uri="https://zoo/intent.onnx")
    named = control_pb2.LoadModelRequest(name="n", uri="https://zoo/x.onnx", backend="simulated")
    assert backends.for_load(hef) == "hailo"
    assert backends.for_load(onnx) == backends.for_load(by_suffix) == "onnxruntime"
    assert backends.for_load(named) == "simulated"  # a named backend is always taken
    assert backends.get().name == "hailo" and backends.default == "hailo"
    backends.close()


def test_artifact_format() -> None:
    assert artifact_format("HEF", "x") == "hef"
    assert artifact_format("", "https://h/a/b.onnx?sig=1") == "onnx"
    assert artifact_format("", "/models/det_h8l.hef") == "hef"
    assert artifact_format("", "https://h/model") == ""
