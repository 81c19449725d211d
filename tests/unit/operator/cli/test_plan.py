"""`hatswarm plan`: capacity from measured fps, proved by placement with K nodes down."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.cli.main import main as hatswarm
from hatswarm_operator.cli.plan import main
from hatswarm_operator.core.fleetplan import check_failures, fps_for, plan_fleet

D = Decimal
SHA = "a" * 64


def pool_doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "p"},
        "spec": {
            "accelerators": ["hailo8l", "hailo8"],
            "cloudFallback": {"endpoint": "cloud:443", "pricePer1kUsd": 0.4},
            **spec,
        },
    }


def model_doc(
    name: str,
    fps: dict[str, float | None],
    *,
    memory: int = 256,
    replicas: int = 1,
    slo_ms: float = 1000.0,
    contexts: int = 1,
) -> dict[str, Any]:
    artifacts = []
    for accel, value in fps.items():
        art: dict[str, Any] = {
            "accelerator": accel,
            "format": "onnx" if accel == "cpu" else "hef",
            "uri": f"https://models.example/{name}/{accel}",
            "sha256": SHA,
        }
        if value is not None:
            art["throughputFps"] = value
        artifacts.append(art)
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "pool": "p",
            "version": "1",
            "artifacts": artifacts,
            "replicas": {"min": 1, "max": 50, "desired": replicas},
            "resources": {"memoryMiB": memory, "npuContexts": contexts},
            "slo": {"p99LatencyMs": slo_ms},
        },
    }


def write(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


def by_accel(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["accelerator"]: p for p in result["plans"]}


def test_n_plus_k_one_replica_per_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 231 req/s of yolov8s at 110 fps is 2.1 busy NPUs: 3 at <= 70%, +1 for a failure.
    f = write(tmp_path, pool_doc(accelerators=["hailo8l"]), model_doc("yolo", {"hailo8l": 110}))
    code, out = run_json(capsys, "-f", str(f), "--load", "yolo=231", "-o", "json")
    assert code == 0
    p = by_accel(out)["hailo8l"]
    assert p["feasible"]
    assert p["capacity_devices"] == 4
    assert p["devices"] == 4
    assert p["replicas"] == {"yolo": 4}
    assert all(models == ["yolo"] for models in p["layout"].values())
    assert p["worst_utilisation_after_failures"] == 0.7  # 231 / 3 / 110
    assert p["failure_sets_checked"] == 4
    # 4 devices at the seed's $138.845 a year each; the cloud: 231/s x a year x $0.0004
    assert p["edge_usd_per_year"] == pytest.approx(4 * 138.8453, abs=0.01)
    assert p["cloud_usd_per_year"] == pytest.approx(231 * 31_536_000 * 0.0004, abs=0.01)
    assert out["recommended"] == "hailo8l"


def test_two_failures_need_two_spares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, pool_doc(accelerators=["hailo8l"]), model_doc("yolo", {"hailo8l": 110}))
    _, out = run_json(
        capsys, "-f", str(f), "--load", "yolo=231", "--tolerate-failures", "2", "-o", "json"
    )
    p = by_accel(out)["hailo8l"]
    assert p["devices"] == 5
    assert p["failure_sets_checked"] == 10  # C(5, 2)


def test_memory_forces_more_nodes_than_npu_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two big models barely load the NPU, but only one fits a node's memory: capacity says
    2 devices (1 + 1 spare); each model needs 2 replicas to survive a failure, so 4. (A 4Gi
    agent container: the default 2Gi one could hold neither.)"""
    f = write(
        tmp_path,
        pool_doc(accelerators=["hailo8"], agent={"resources": {"limits": {"memory": "4Gi"}}}),
        model_doc("big-a", {"hailo8": 500}, memory=2000),
        model_doc("big-b", {"hailo8": 500}, memory=2000),
    )
    _, out = run_json(
        capsys, "-f", str(f), "--load", "big-a=10", "--load", "big-b=10", "-o", "json"
    )
    p = by_accel(out)["hailo8"]
    assert p["capacity_devices"] == 2
    assert p["devices"] == 4
    assert p["replicas"] == {"big-a": 2, "big-b": 2}
    for models in p["layout"].values():
        assert len(models) == 1


def test_hot_node_grows_the_fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NPU time is not fungible once a failure concentrates a model on a survivor: a second
    model sharing a node pushes it over the ceiling, so placement needs more than N+K."""
    f = write(
        tmp_path,
        pool_doc(accelerators=["hailo8l"]),
        model_doc("det", {"hailo8l": 100}),
        model_doc("cls", {"hailo8l": 100}),
    )
    _, out = run_json(capsys, "-f", str(f), "--load", "det=130", "--load", "cls=30", "-o", "json")
    p = by_accel(out)["hailo8l"]
    # busy 1.6 -> ceil(1.6/0.7) = 3 + 1 = 4 by capacity
    assert p["capacity_devices"] == 4
    assert p["feasible"]
    assert p["devices"] >= 4
    assert p["worst_utilisation_after_failures"] <= 0.7
    # every single failure was checked on the final fleet
    assert p["failure_sets_checked"] == p["devices"]


def test_faster_accelerator_is_cheaper(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, pool_doc(), model_doc("yolo", {"hailo8l": 110, "hailo8": 491}))
    code, out = run_json(capsys, "-f", str(f), "--load", "yolo=900", "-o", "json")
    plans = by_accel(out)
    assert plans["hailo8l"]["devices"] == 13  # ceil(900/110/0.7) = 12, + 1
    assert plans["hailo8"]["devices"] == 4  # ceil(900/491/0.7) = 3, + 1
    assert out["recommended"] == "hailo8"
    assert code == 0


def test_fps_sources_precedence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, pool_doc(accelerators=["hailo8l"]), model_doc("yolo", {"hailo8l": 110}))
    measured = tmp_path / "measured.json"
    measured.write_text(json.dumps({"yolo": {"hailo8l": 231.0}}))
    _, out = run_json(
        capsys, "-f", str(f), "--load", "yolo=231", "--measured", str(measured), "-o", "json"
    )
    assert by_accel(out)["hailo8l"]["fps"] == {"yolo": 231.0}
    assert by_accel(out)["hailo8l"]["devices"] == 3  # 1 busy -> 2 at 70%, +1
    _, out = run_json(
        capsys, "-f", str(f), "--load", "yolo=231", "--measured", str(measured),
        "--fps", "yolo:hailo8l=462", "-o", "json",
    )  # fmt: skip
    assert by_accel(out)["hailo8l"]["fps"] == {"yolo": 462.0}
    assert by_accel(out)["hailo8l"]["devices"] == 2


def test_cpu_artifact_serves_where_no_npu_build(tmp_path: Path) -> None:
    m = EdgeModel.model_validate(model_doc("m", {"cpu": 20, "hailo8": 300}))
    assert fps_for(m, "hailo8l", {}, {}) == (D(20), "cpu")
    assert fps_for(m, "hailo8", {}, {}) == (D(300), "hailo8")
    assert fps_for(m, "hailo8l", {"m": {"cpu": D(25)}}, {}) == (D(25), "cpu")
    n = EdgeModel.model_validate(model_doc("n", {"hailo8": None}))
    assert fps_for(n, "hailo8", {}, {}) == (None, "hailo8")
    assert fps_for(n, "hailo8l", {}, {}) == (None, "")


def test_unservable_kind_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(
        tmp_path,
        pool_doc(),
        model_doc("yolo", {"hailo8": 491}),
        model_doc("slow", {"hailo8l": 10, "hailo8": None}, slo_ms=5),
    )
    code, out = run_json(
        capsys, "-f", str(f), "--load", "yolo=100", "--load", "slow=1", "-o", "json"
    )
    plans = by_accel(out)
    assert not plans["hailo8l"]["feasible"]
    assert any("yolo: no artifact runs on hailo8l" in w for w in plans["hailo8l"]["warnings"])
    assert any("slow: too slow" in w for w in plans["hailo8l"]["warnings"])
    assert any("slow: no measured throughput" in w for w in plans["hailo8"]["warnings"])
    assert out["recommended"] is None
    assert code == 1


def test_a_kind_without_the_models_build_names_the_cpu_artifact_it_falls_back_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--fps for a chip the model has no build for cannot help: the warning says the node would
    run the cpu artifact, and that one has no throughput."""
    f = write(tmp_path, pool_doc(), model_doc("intent", {"hailo8l": 800, "cpu": None}))
    _, out = run_json(
        capsys, "-f", str(f), "--load", "intent=50", "--fps", "intent:hailo8=1600", "-o", "json"
    )
    warnings = by_accel(out)["hailo8"]["warnings"]
    assert any(
        "intent: no measured throughput of its cpu artifact" in w and "none for hailo8" in w
        for w in warnings
    ), warnings


def test_check_failures_finds_lost_model() -> None:
    layout = {"a": ("x",), "b": ("y",), "c": ("y",)}
    check = check_failures(["a", "b", "c"], layout, {"x": D("0.1"), "y": D("0.1")}, 1, D("0.7"))
    assert not check.ok
    assert check.down == ("a",)
    assert "nothing serves x" in check.reason


def test_pure_plan_matches_cli(tmp_path: Path) -> None:
    pool = InferencePool.model_validate(pool_doc(accelerators=["hailo8l"]))
    model = EdgeModel.model_validate(model_doc("yolo", {"hailo8l": 110}))
    [p] = plan_fleet(pool, [model], {"yolo": D(231)}, failures=1)
    assert p.devices == 4
    assert p.feasible
    assert p.break_even_per_device_day is not None


def test_table_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, pool_doc(accelerators=["hailo8l"]), model_doc("yolo", {"hailo8l": 110}))
    assert hatswarm(["plan", "-f", str(f), "--load", "yolo=231"]) == 0
    out = capsys.readouterr().out
    assert "recommended: 4 x hailo8l" in out
    assert "edge is cheaper" in out
    assert main(["-f", str(f), "--load", "nope=1"]) == 2
    assert "no EdgeModel" in capsys.readouterr().err
    assert main(["-f", str(f), "--load", "yolo"]) == 2
    assert main(["-f", str(f), "--load", "yolo=1", "--fps", "yolo=3"]) == 2
    assert main(["-f", str(f), "--load", "yolo=1", "--max-utilisation", "2"]) == 2


def test_nodes_file_plans_each_node_by_its_own_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2 GB and an 8 GB Pi (memoryMiB as `hatswarm up --nodes-file` reads it, less the
    512 MiB reserve): a 1500 MiB model fits only the 8 GB one, so its second replica (for one
    failure) needs a third device, where two 3072 MiB nodes sufficed without the file."""
    f = write(tmp_path, pool_doc(accelerators=["cpu"]), model_doc("llm", {"cpu": 10}, memory=1500))
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(
        yaml.safe_dump(
            [
                {"name": "pi-2gb", "accelerator": "cpu", "memoryMiB": 1913},
                {"name": "pi-8gb", "accelerator": "cpu", "memoryMiB": 7716},
                {"name": "pi-10h", "accelerator": "hailo10h", "memoryMiB": 7716},  # not planned
            ]
        )
    )
    _, same = run_json(capsys, "-f", str(f), "--load", "llm=5", "-o", "json")
    assert by_accel(same)["cpu"]["devices"] == 2
    _, mixed = run_json(
        capsys, "-f", str(f), "--load", "llm=5", "--nodes-file", str(nodes), "-o", "json"
    )
    p = by_accel(mixed)["cpu"]
    assert p["devices"] == 3
    assert p["layout"] == {"pi-8gb": ["llm"], "pi-2gb": [], "cpu-003": ["llm"]}

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([{"name": "pi", "accelerator": "cpu", "memoryMiB": "8G"}]))
    assert main(["-f", str(f), "--load", "llm=5", "--nodes-file", str(bad)]) == 2
    assert "memoryMiB must be a whole number" in capsys.readouterr().err
    assert main(["-f", str(f), "--load", "llm=5", "--nodes-file", str(tmp_path / "no")]) == 2
    assert "--nodes-file" in capsys.readouterr().err


def test_a_model_that_fits_the_node_but_not_the_agent_container_is_unplaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every model a node holds runs in its agent container, so the operator caps each node's
    budget at the container's memory limit less agentMemoryBaselineMiB (1Gi - 256 = 768 MiB
    here); plan does the same: a 1000 MiB model fits an 8 GB Pi, not its agent, and is
    reported unplaced with the operator's own message."""
    from dataclasses import replace

    from hatswarm_operator.core.inventory import container_cap
    from hatswarm_operator.core.reconcile import plan_pool
    from hatswarm_operator.kube.sources import NodeView, PodView, node_states

    small = {"resources": {"limits": {"memory": "1Gi"}}}
    pool = pool_doc(accelerators=["cpu"], agent=small)
    model = model_doc("llm", {"cpu": 10}, memory=1000)
    f = write(tmp_path, pool, model)
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump([{"name": "pi-8gb", "accelerator": "cpu", "memoryMiB": 7716}]))

    # The operator, on a cluster with that Pi: its Node, its agent Pod, one probe.
    pool_obj = InferencePool.model_validate(pool)
    [seen] = node_states(
        {"pi-8gb": NodeView("pi-8gb", {}, True, True, 7716)},
        [PodView("agent-x", "p", "pi-8gb", "10.0.0.8:50051", True, "Running", False, "")],
        pool_obj.spec.placement.node_memory_reserve_mi_b,
        container_cap(pool_obj),
    )
    assert seen.memory_mib == 768
    operator = plan_pool(
        pool_obj, [EdgeModel.model_validate(model)], [replace(seen, up=True, accelerator="cpu")], 0
    )
    [unplaced] = [e for e in operator.events if e.name == "llm"]
    assert "each node offers at most 768 MiB" in unplaced.message

    _, idle = run_json(capsys, "-f", str(f), "--load", "llm=0", "--nodes-file", str(nodes),
                       "--tolerate-failures", "0", "-o", "json")  # fmt: skip
    p = by_accel(idle)["cpu"]
    assert p["layout"] == {"pi-8gb": []}
    assert p["warnings"] == [f"llm: {unplaced.message}"]

    code, busy = run_json(capsys, "-f", str(f), "--load", "llm=5", "--nodes-file", str(nodes),
                          "-o", "json")  # fmt: skip
    assert code == 1
    p = by_accel(busy)["cpu"]
    assert not p["replicas"] and not p["layout"]
    assert p["warnings"][-1].startswith("no fleet up to ")  # no number of such Pis helps
    assert p["warnings"][-1].endswith(f"; {container_cap(pool_obj)}")

    # A container that holds it: planned on the Pi, as the operator would place it.
    roomy = write(tmp_path, pool_doc(accelerators=["cpu"], agent={"resources": {"limits": {
        "memory": "2Gi"}}}), model)  # fmt: skip
    code, ok = run_json(capsys, "-f", str(roomy), "--load", "llm=5", "--nodes-file", str(nodes),
                        "--tolerate-failures", "0", "-o", "json")  # fmt: skip
    assert code == 0 and by_accel(ok)["cpu"]["layout"] == {"pi-8gb": ["llm"]}
