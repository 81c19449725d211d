"""Where the table an agent routes by comes from: flags, static files, pushes, the saved copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hatswarm_agent.cli import build_parser, config_from_args
from hatswarm_agent.control.assignment import KeptRoutingTables, RoutingTableFile
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.config import DispatchConfig
from hatswarm_agent.routing.policy import compile_table
from hatswarm_agent.routing.table import RoutingTableStore, merge_static


def _config(*argv: str) -> DispatchConfig:
    config = config_from_args(build_parser().parse_args(list(argv)))
    assert config.routing_table is not None
    compiled = compile_table(config.routing_table, "me", set())
    config.routing.timeout_ms = 1  # proves the table's value, not the flag's, is read below
    assert config.routing.timeout_s(compiled) == compiled.table.timeout_ms / 1000
    return config.routing


def test_timeout_and_retries_flags_are_honoured_with_peer_or_a_table_file(
    tmp_path: Path,
) -> None:
    args = build_parser().parse_args(
        ["--peer", "m=10.0.0.1:8001", "--timeout-ms", "1234", "--retries", "5"]
    )
    table = config_from_args(args).routing_table
    assert table is not None and (table.timeout_ms, table.retries) == (1234, 5)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"routes": [], "retries": 1}))
    args = build_parser().parse_args(["--routing-table", str(path), "--timeout-ms", "777"])
    table = config_from_args(args).routing_table
    assert table is not None and (table.timeout_ms, table.retries) == (777, 1)  # file wins
    _config("--peer", "m=10.0.0.1:8001", "--timeout-ms", "1234")


def test_a_push_replaces_the_models_it_routes_and_keeps_the_static_others() -> None:
    static = control_pb2.RoutingTable(
        timeout_ms=900,
        routes=[
            control_pb2.Route(model="a", endpoints=[control_pb2.Endpoint(address="s:1")]),
            control_pb2.Route(model="b", endpoints=[control_pb2.Endpoint(address="s:2")]),
        ],
    )
    empty = control_pb2.RoutingTable(generation=7)
    merged = merge_static(empty, static)
    assert [r.model for r in merged.routes] == ["a", "b"] and merged.timeout_ms == 900
    pushed = control_pb2.RoutingTable(
        generation=8,
        timeout_ms=300,
        routes=[control_pb2.Route(model="a", endpoints=[control_pb2.Endpoint(address="p:1")])],
    )
    merged = merge_static(pushed, static)
    assert [(r.model, r.endpoints[0].address) for r in merged.routes] == [
        ("a", "p:1"),
        ("b", "s:2"),
    ]
    assert merged.timeout_ms == 300
    assert merge_static(pushed, None) is pushed


def test_pushed_tables_are_saved_and_restored_and_a_failed_save_leaves_no_stale_file(
    tmp_path: Path,
) -> None:
    file = RoutingTableFile(tmp_path / "routing-table.json")
    assert file.load() is None
    store = RoutingTableStore()
    heard: list[int] = []
    kept = KeptRoutingTables(store, file, lambda: heard.append(store.generation))
    table = control_pb2.RoutingTable(
        generation=4,
        routes=[control_pb2.Route(model="m", endpoints=[control_pb2.Endpoint(address="x:1")])],
        members=[control_pb2.PoolMember(address="x:1")],
    )
    assert kept.push(table) == 4 and heard == [4]
    assert kept.push(control_pb2.RoutingTable(generation=3)) == 4 and heard == [4]  # older
    kept.close()
    restored = file.load()
    assert restored == table
    (tmp_path / "routing-table.json").write_text("{not json")
    assert file.load() is None and (tmp_path / "routing-table.json.corrupt").exists()


def test_a_save_that_fails_for_want_of_space_removes_the_stale_file(tmp_path: Path) -> None:
    """A full disk (here: RLIMIT_FSIZE, which fails writes with EFBIG the same way) must not
    leave an old table or assignment behind for a restart to bring back."""
    import resource

    from hatswarm_agent.control.assignment import AssignmentStore

    file = RoutingTableFile(tmp_path / "routing-table.json")
    file.save(control_pb2.RoutingTable(generation=1))
    assignment = AssignmentStore(tmp_path / "assignment.json")
    assignment.save([control_pb2.LoadModelRequest(name="m", uri="/m.onnx")])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16, hard))
    try:
        with pytest.raises(OSError, match="too large"):
            file.save(control_pb2.RoutingTable(generation=2, policy="RoundRobin"))
        with pytest.raises(OSError, match="too large"):
            assignment.save([])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert file.load() is None and assignment.load() == []
    assert list(tmp_path.iterdir()) == []  # no temp files left either
