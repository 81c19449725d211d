"""AssignmentStore: protobuf round trip, atomic save, corrupt files never crash the agent."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from hatswarm_agent.control.assignment import AssignmentStore, entry_of, request_of
from hatswarm_agent.protocol.v1 import control_pb2

Load = control_pb2.LoadModelRequest


def sample_request() -> control_pb2.LoadModelRequest:
    return control_pb2.LoadModelRequest(
        name="resnet50",
        version="v2",
        uri="https://registry.local/resnet50.hef",
        sha256="ab" * 32,
        signature="c2ln",
        public_key="a2V5",
        backend="hailo",
        format="hef",
        options={"max_batch_size": "8", "max_queue_delay_us": "500"},
        cache_ttl_seconds=30,
        adapters=[control_pb2.AdapterArtifact(name="lora1", uri="file:///a", sha256="cd" * 32)],
    )


def test_request_round_trip() -> None:
    req = sample_request()
    entry = entry_of(req)
    assert entry["options"] == {"max_batch_size": "8", "max_queue_delay_us": "500"}
    assert entry["adapters"] == [{"name": "lora1", "uri": "file:///a", "sha256": "cd" * 32}]
    assert request_of(entry) == req


# A file as the agent before json_format wrote it (AssignedModel, dataclasses.asdict).
PREVIOUS_FORMAT = {
    "models": [
        {
            "adapters": [{"name": "lora1", "sha256": "cd" * 32, "uri": "file:///a"}],
            "backend": "hailo",
            "cache_ttl_seconds": 30,
            "format": "hef",
            "name": "resnet50",
            "options": {"max_batch_size": "8", "max_queue_delay_us": "500"},
            "public_key": "a2V5",
            "sha256": "ab" * 32,
            "signature": "c2ln",
            "uri": "https://registry.local/resnet50.hef",
            "version": "v2",
        },
        {
            "adapters": [],
            "backend": "",
            "cache_ttl_seconds": 0,
            "format": "",
            "name": "iris",
            "options": {},
            "public_key": "",
            "sha256": "",
            "signature": "",
            "uri": "/models/iris.onnx",
            "version": "1",
        },
    ],
    "version": 1,
}


def test_the_previous_versions_file_loads_and_is_written_the_same(tmp_path: Path) -> None:
    path = tmp_path / "assignment.json"
    previous = json.dumps(PREVIOUS_FORMAT, indent=2, sort_keys=True)
    path.write_text(previous)
    store = AssignmentStore(path)
    models = store.load()
    assert models == [sample_request(), Load(name="iris", version="1", uri="/models/iris.onnx")]
    store.save(models)
    assert path.read_text() == previous  # a rolled-back agent reads it as before


def test_save_load_round_trip(tmp_path: Path) -> None:
    store = AssignmentStore(tmp_path / "state" / "assignment.json")
    models = [sample_request(), Load(name="iris", version="1", uri="/models/iris.onnx")]
    store.save(models)
    assert store.load() == models
    store.save(models[1:])  # a later save replaces the file
    assert store.load() == models[1:]
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["assignment.json"]


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert AssignmentStore(tmp_path / "none.json").load() == []


@pytest.mark.parametrize(
    "content",
    [
        b'{"version": 1, "models": [{"name": "x", "ver',  # torn write
        b"\xff\xfe not utf-8",
        b"[]",
        b'{"version": 99, "models": []}',
        b'{"version": 1, "models": [{"name": "x", "uri": 5}]}',
        b'{"version": 1, "models": [{"name": "x", "uri": "/m", "options": {"a": 1}}]}',
        b"[" * 100_000,
    ],
)
def test_corrupt_file_is_logged_and_empty(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "assignment.json"
    path.write_bytes(content)
    store = AssignmentStore(path)
    with caplog.at_level(logging.ERROR, logger="hatswarm_agent.control.assignment"):
        assert store.load() == []
    assert "corrupt" in caplog.text
    assert (tmp_path / "assignment.json.corrupt").read_bytes() == content  # kept for a human
    store.save([Load(name="m", version="1", uri="/m")])  # and the agent carries on
    assert store.load()[0].name == "m"


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    entry = {"name": "m", "version": "1", "uri": "/m", "added_by_a_newer_agent": True}
    path.write_text(json.dumps({"version": 1, "models": [entry]}))
    assert AssignmentStore(path).load() == [Load(name="m", version="1", uri="/m")]


def test_failed_save_removes_the_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old file lists what is no longer the assignment (an unloaded model would come back
    after a restart): it goes, and the agent starts empty until the control plane resends."""
    store = AssignmentStore(tmp_path / "a.json")
    old = [Load(name="old", version="1", uri="/old")]
    store.save(old)

    def boom(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        store.save([Load(name="new", version="1", uri="/new")])
    monkeypatch.undo()
    assert store.load() == []
    assert list(tmp_path.iterdir()) == []  # no temp file left behind either
    store.save(old)
    assert store.load() == old
