"""Smoke test of the node-agent benchmark: models build, the baselines and the contention meter
measure sane numbers, the summaries and the table follow from given figures, and one short run
against the floor and a real agent (no peers) gives a complete result.

No timing assertions: tiny iteration counts so it runs in seconds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import onnx
import psutil
import pytest
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

from tests import benchjobs, tritonjobs
from tests.agentproc import free_port
from tests.polling import poll
from tests.scripts import load_script

pytestmark = pytest.mark.integration

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"


def _load(name: str, filename: str) -> ModuleType:
    return load_script(BENCH_DIR / filename, name)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load("hatswarm_agent_bench_under_test", "agent_bench.py")


@pytest.fixture(scope="module")
def model_paths(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths: dict[str, Path] = bench.models.build_models(tmp_path_factory.mktemp("models")).as_dict()
    return paths


@pytest.fixture(scope="module")
def contention(bench: ModuleType) -> ModuleType:
    return bench.contention


def test_models_build_valid_with_dynamic_batch(
    bench: ModuleType, model_paths: dict[str, Path]
) -> None:
    expected = {
        "cnn": (bench.models.CNN_INPUT, ["batch", 224, 224, 3], onnx.TensorProto.UINT8),
        "mlp": (bench.models.MLP_INPUT, ["batch", 16], onnx.TensorProto.FLOAT),
        "mobilenet": (bench.models.MOBILENET_INPUT, ["batch", 224, 224, 3], onnx.TensorProto.UINT8),
    }
    for name, (input_name, dims, elem_type) in expected.items():
        model = onnx.load(str(model_paths[name]))
        onnx.checker.check_model(model)
        (graph_input,) = model.graph.input
        assert graph_input.name == input_name
        assert graph_input.type.tensor_type.elem_type == elem_type
        shape = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
        assert shape == dims
    ops = {n.op_type for n in onnx.load(str(model_paths["mobilenet"])).graph.node}
    assert {"BatchNormalization", "Clip", "Softmax"} <= ops  # as MobileNet v1 exports are


def test_models_are_deterministic(bench: ModuleType, model_paths: dict[str, Path]) -> None:
    assert bench.models.build_mlp(1).SerializeToString() == model_paths["mlp"].read_bytes()
    assert bench.models.build_cnn(0).SerializeToString() == model_paths["cnn"].read_bytes()
    assert bench.models.build_mobilenet(2).SerializeToString() == (
        model_paths["mobilenet"].read_bytes()
    )


def test_raw_baseline_measures_sensible_numbers(
    bench: ModuleType, model_paths: dict[str, Path]
) -> None:
    raw = bench.RawTarget(model_paths)
    work = bench.workloads(model_paths)
    assert work["cnn"].output_shape == (1, 1000)
    assert work["mobilenet"].output_shape == (1, 1001)
    cnn = raw.caller(work["cnn"], 1)()
    assert cnn.shape == (1, 1000)
    assert np.isfinite(cnn).all()
    probabilities = raw.caller(work["mobilenet"], 2)()
    assert probabilities.sum() == pytest.approx(1.0, rel=1e-4)
    for name in ("cnn", "mlp"):
        samples = bench.measure_latency(raw.caller(work[name], 1), calls=3, min_s=0.0)
        assert len(samples) == 3
        q = bench.percentiles(samples)
        assert 0 < q["p50_ms"] <= q["p99_ms"] < 10_000
        rps = bench.measure_throughput(lambda n=name: raw.caller(work[n], 1), 2, 0.05)
        assert math.isfinite(rps)
        assert rps > 0


def test_contention_meter_tells_own_work_from_outside_work(contention: ModuleType) -> None:
    meter = contention.CpuMeter()
    with meter.block() as own:
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:  # 0.3 s of this process's own CPU
            pass
    assert own.result["own_cores"] > 0.0
    spinner = subprocess.Popen(  # not our child's child: a stranger, started by the shell
        ["sh", "-c", f'exec {sys.executable} -c "import time; t = time.time() + 1.5\n'
         'while time.time() < t: pass" & wait'],
        start_new_session=True,
    )  # fmt: skip
    try:
        # The spinning child of the shell must exist before the block starts: a process born
        # during a block counts only in the machine's busy time, not among the top strangers.
        assert poll(lambda: psutil.Process(spinner.pid).children(), within=10, every=0.01)
        outside_meter = contention.CpuMeter(root_pid=os.getpid() + 10**7)  # a tree of nobody
        with outside_meter.block() as outside:
            time.sleep(0.5)
    finally:
        spinner.wait()
    assert outside.result["outside_cores"] > 0.2
    assert outside.result["contended"] is True
    assert outside.result["top_outside"]
    summary = contention.summarise([own.result, outside.result])
    assert summary["blocks"] == 2
    assert summary["contended_blocks"] >= 1


def _round(
    p50: float,
    p99: float,
    rps: float,
    raw_p50: float,
    outside: float = 0.0,
    busy: float = 1.0,
    cpu: float | None = None,
) -> dict:
    block = {
        "wall_s": 1.0, "own_cores": 1.0, "outside_cores": outside, "loadavg_1m": [0.5, 0.5],
        "top_outside": [], "contended": outside > 0.2,
    }  # fmt: skip
    side = {"p50_ms": raw_p50, "p99_ms": raw_p50 * 1.2, "threads": 2, "throughput_rps": 100.0}
    return {
        "p50_ms": p50, "p90_ms": p50, "p99_ms": p99, "calls": 3, "samples": [p50, p50, p99],
        "throughput_rps": rps, "raw": {**bench_pair(side), "before": side, "after": side},
        "contention": {"latency": block, "throughput": {**block, "own_cores": busy}},
        **({"server_cpu_ms_per_request": cpu} if cpu is not None else {}),
    }  # fmt: skip


def bench_pair(side: dict) -> dict:
    return {"p50_ms": side["p50_ms"], "throughput_rps": side["throughput_rps"], "unstable": False}


def test_summaries_ratios_and_table_from_figures(bench: ModuleType) -> None:
    rows = {
        "agent": {
            "cnn": [
                _round(11.0, 13.0, 97.0, 10.0, busy=1.9, cpu=12.9),
                _round(11.2, 14.0, 99.0, 10.0, busy=1.98, cpu=12.5),
                _round(11.1, 14.0, 98.0, 10.0, busy=1.96, cpu=12.7),
            ]
        },
        "kserve_default": {
            "cnn": [_round(12.0, 20.0, 80.0, 10.0, outside=0.5, cpu=c) for c in (14.0, 16.0)]
        },
        "kserve_tuned": {"cnn": [_round(16.0, 18.0, 90.0, 10.0, cpu=12.0)] * 2},
    }
    summaries = {r: {m: bench.summarise_row(v) for m, v in per.items()} for r, per in rows.items()}
    agent = summaries["agent"]["cnn"]
    assert agent["p50_ms"] == pytest.approx(11.1)
    assert agent["p50_over_raw"] == pytest.approx(1.11)
    assert agent["throughput_over_raw"] == pytest.approx(0.98)
    assert agent["busy_cores_8_clients"] == pytest.approx(1.96)  # the 8-client blocks' median
    assert agent["reproduced"] is True  # 11.0 vs 11.2: within 10%
    assert agent["server_cpu_ms_per_request"] == pytest.approx(12.7)  # median of rounds
    assert agent["server_cpu_spread"] == pytest.approx(0.4 / 12.7)
    assert "p50_over_hold" not in agent  # only the held floor waited
    held = bench.summarise_row(
        [{**_round(12.0, 13.0, 90.0, 9.0), "hold_ms": 10.0},
         {**_round(13.0, 14.0, 90.0, 9.0), "hold_ms": 10.0}]
    )  # fmt: skip
    assert held["p50_over_hold"] == pytest.approx(1.25)
    assert held["p50_minus_hold_ms"] == pytest.approx(2.5)
    best = bench.best_of(summaries, ["kserve_default", "kserve_tuned"])["cnn"]
    assert (best["p50_from"], best["p99_from"], best["throughput_from"]) == (
        "kserve_default", "kserve_tuned", "kserve_tuned",
    )  # fmt: skip
    assert (best["server_cpu_ms_per_request"], best["server_cpu_from"]) == (12.0, "kserve_tuned")
    table = {**summaries, "kserve": {"cnn": best}, "_rss": {"agent": 200.0, "kserve": 250.0}}
    ratios = bench.compute_ratios(table, ["cnn"])
    assert ratios["cnn_p50_agent_over_kserve"]["value"] == pytest.approx(11.1 / 12.0)
    assert ratios["cnn_p50_agent_over_kserve"]["met"] is True
    assert ratios["cnn_throughput_agent_over_kserve"]["met"] is True
    assert ratios["rss_agent_over_kserve"]["value"] == pytest.approx(0.8)
    cpu = ratios["cnn_cpu_agent_over_kserve"]
    assert cpu["value"] == pytest.approx(12.7 / 12.0) and "target" not in cpu  # beside them
    results = {
        "models": {"cnn": {}},
        "table": {k: v for k, v in table.items() if not k.startswith("_")},
        "rss_mb": {"after_run": {"agent": 200.0, "kserve": 250.0}, "no_models": {"agent": 90.0}},
        "servers": {"mlserver": {"status": "skipped", "reason": "no network"}},
        "machine": {"cpus": 2, "blocks": {"blocks": 8, "contended_blocks": 2}},
        "ratios": ratios,
    }
    text = bench.format_table(results)
    assert "skipped: no network" in text
    assert "12.0 / 18.0, 90*" in text  # the best of both forms; contended blocks marked
    assert "90 / 200" in text
    assert "2 of 8 blocks contended" in text
    cpu_rows = {line.split(" | ")[0]: line for line in text.splitlines() if "CPU" in line}
    assert "| hatswarm-agent | 12.70 |" in text  # its rounds within 10%: no mark
    assert "| KServe 0.21 (best of default, tuned) | 12.00 |" in text, cpu_rows


def test_a_short_run_against_the_floor_and_the_agent(tmp_path: Path) -> None:
    # In a child: the run imports tritonclient, whose protobufs clash with the agent's here.
    results = tritonjobs.run(benchjobs.agent_bench_run, str(tmp_path), ["mlp"])
    table = results["table"]
    assert results["servers"]["floor"]["status"] == "ok", results["servers"]["floor"]
    assert results["servers"]["agent"]["status"] == "ok", results["servers"]["agent"]
    assert results["servers"]["agent"]["outputs_match_raw"]["agent"] == {"mlp": True}
    for row in ("raw", "floor", "floor_held", "agent"):
        assert table[row]["mlp"]["p50_ms"] > 0, row
    # The held floor answers no sooner than the raw run time it holds each reply for.
    (waits,) = results["floor_held_waits_ms"]  # one round: one set of waits
    assert table["floor_held"]["mlp"]["p50_ms"] >= waits["mlp"] > 0
    assert table["floor_held"]["mlp"]["p50_over_hold"] >= 1
    # The agent's own view of the same lone requests: the model's run inside its handler,
    # the handler inside what the client waited.
    parts = table["agent"]["mlp"]["breakdown_mean_ms"]
    assert 0 < parts["compute"] < parts["handler"] < parts["client"], parts
    assert parts["raw"] > 0 and "breakdown_mean_ms" not in table["floor"]["mlp"]
    # What each server's process tree spent per request at 8 clients; raw has no server.
    assert table["agent"]["mlp"]["server_cpu_ms_per_request"] > 0
    assert table["floor"]["mlp"]["server_cpu_ms_per_request"] > 0
    assert "server_cpu_ms_per_request" not in table["raw"]["mlp"]
    assert results["rss_mb"]["no_models"]["agent"] > 0
    assert results["rss_mb"]["after_run"]["agent"] > 0
    assert "machine" in results and "blocks" in results["machine"]
    json.dumps(results)  # what run.py writes


def test_the_held_floor_waits_only_for_the_models_it_holds() -> None:
    floor = _load("hatswarm_floor_server_under_test", "peers/floor_server.py")
    assert floor.parse_hold("held=0.25") == ("held", 0.25)
    free = free_port()
    argv = [sys.executable, str(BENCH_DIR / "peers" / "floor_server.py"), "--port", str(free)]
    argv += ["--output", "quick=out:FP32:1x4", "--output", "held=out:FP32:1x4"]
    proc = subprocess.Popen([*argv, "--hold", "held=0.25"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and "floor ready" in proc.stdout.readline()
        with grpc.insecure_channel(f"127.0.0.1:{free}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            def took(model: str) -> float:
                start = time.perf_counter()
                reply = stub.ModelInfer(pb.ModelInferRequest(model_name=model))
                assert list(reply.outputs[0].shape) == [1, 4]
                return time.perf_counter() - start

            took("quick")
            assert took("held") >= 0.25
            assert took("quick") < 0.25
    finally:
        proc.terminate()
        proc.wait(10)
