"""`hatswarm cost report` and `hatswarm cost incident` against a real Prometheus.

A real Prometheus server (Debian package `prometheus`) on loopback scrapes a real agent every
second: a simulated Hailo-8L serving yolov8s (110 fps) and mobilenet_v2 (1738 fps) profiles,
with a cloud fallback route to a second agent that stands in for the cloud. The test drives
requests with tritonclient, waits until Prometheus has scraped them, and checks that both
commands report exactly what was sent, that edge cost follows NPU seconds, and that the
files are written. A third scrape target that nobody serves is the node that is down.

Needs the `prometheus` binary: fails without it under `make test`, skips elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hatswarm_operator.cli.cost import main as cost_main
from hatswarm_operator.finops.promql import Prometheus

from tests import prometheusproc, tritonjobs
from tests.agentproc import AgentProcess, free_port, start_agent
from tests.onnxmodels import build_mlp
from tests.polling import poll

pytestmark = pytest.mark.integration

T = TypeVar("T")

YOLO, MOBILENET, CLOUDY = "yolov8s", "mobilenet-v2", "cloudy"  # Kubernetes names: no "_"
SENT = {YOLO: 40, MOBILENET: 120}
BAD = 5  # wrong-shape requests to yolov8s: failures
CLOUD = 10
PRICE_PER_1K = 2.0


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[AgentProcess, int]]:
    models = tmp_path / "models"
    models.mkdir()
    cloud = start_agent(["--model", f"{CLOUDY}=file://{build_mlp(models / 'cloud.onnx', seed=3)}"])
    table = tmp_path / "table.json"
    table.write_text(
        json.dumps(
            {
                "routes": [{"model": CLOUDY, "version": "", "cloud_fallback": True}],
                "cloud": {
                    "endpoint": cloud.address,
                    "max_share": 1.0,
                    "price_per_1k_usd": PRICE_PER_1K,
                    "tls": False,
                },
            }
        )
    )
    metrics_port = free_port()
    try:
        edge = start_agent(
            [
                "--node-name", "pi-01", "--backend", "simulated", "--accelerator", "hailo8l",
                "--model", f"{YOLO}=file://{build_mlp(models / 'a.onnx', seed=1)}",
                "--model", f"{MOBILENET}=file://{build_mlp(models / 'b.onnx', seed=2)}",
                "--metrics-port", str(metrics_port), "--routing-table", str(table),
                "--max-batch-size", "1",
            ]
        )  # fmt: skip
    except BaseException:
        cloud.stop()
        raise
    try:
        yield edge, metrics_port
    finally:
        edge.stop()
        cloud.stop()


@pytest.fixture
def prometheus(tmp_path: Path, agents: tuple[AgentProcess, int]) -> Iterator[tuple[str, str, str]]:
    """Prometheus scraping the agent and a target where nothing listens (a node that is down)."""
    _, metrics_port = agents
    target, dead = f"127.0.0.1:{metrics_port}", f"127.0.0.1:{free_port()}"
    with prometheusproc.running(tmp_path, [target, dead]) as url:
        yield url, target, dead


def _scraped(prom: Prometheus, expr: str, want: float) -> bool:
    series = prom.query(expr)
    return bool(series) and series[0].value == want


def _drive(address: str) -> None:
    """The requests, sent by tritonclient in a child process (see tests/tritonjobs.py)."""
    plan = [(model, [1, 64], n, False) for model, n in SENT.items()]
    plan += [(YOLO, [1, 63], BAD, True), (CLOUDY, [1, 64], CLOUD, False)]
    assert tritonjobs.run(tritonjobs.infer_series, address, plan) == []


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    code = cost_main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def test_report_and_incident_match_what_was_sent(
    tmp_path: Path,
    agents: tuple[AgentProcess, int],
    prometheus: tuple[str, str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    edge, _ = agents
    url, target, dead = prometheus
    prom = Prometheus(url)
    # A scrape with the counters at zero, before the window opens.
    assert poll(lambda: _scraped(prom, f'up{{instance="{target}"}}', 1), 20)
    assert poll(
        lambda: _scraped(
            prom, f'count(hatswarm_inference_request_success_total{{instance="{target}"}})', 2
        ),
        10,
    )
    start = time.time() - 0.05
    _drive(edge.address)
    total = sum(SENT.values())
    assert poll(
        lambda: _scraped(
            prom, f'sum(hatswarm_inference_request_success_total{{instance="{target}"}})', total
        ),
        15,
    )
    assert poll(lambda: _scraped(prom, "sum(hatswarm_cloud_fallback_requests_total)", CLOUD), 10)
    end = time.time()
    prom.close()

    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "hatswarm.io/v1alpha1",
                    "kind": "InferencePool",
                    "metadata": {"name": "floor"},
                    "spec": {
                        "cloudFallback": {"endpoint": "cloud:443", "pricePer1kUsd": PRICE_PER_1K}
                    },
                },
                *[
                    {
                        "apiVersion": "hatswarm.io/v1alpha1",
                        "kind": "EdgeModel",
                        "metadata": {"name": name},
                        "spec": {
                            "pool": "floor",
                            "version": "1",
                            "artifacts": [
                                {
                                    "accelerator": "hailo8l",
                                    "format": "hef",
                                    "uri": "file:///m.hef",
                                    "sha256": "0" * 64,
                                }
                            ],
                            "costAttribution": {"team": team},
                        },
                    }
                    for name, team in ((YOLO, "quality"), (MOBILENET, "retail"), (CLOUDY, "retail"))
                ],
            ]
        )
    )
    window = ["--from", f"{start:.3f}", "--to", f"{end:.3f}", "--prometheus", url]

    # --- the report --------------------------------------------------------------------
    out = tmp_path / "report"
    code = cost_main(["report", *window, "-f", str(manifests), "--out", str(out)])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    models = {m["model"]: m for m in report["models"]}
    assert models[YOLO]["requests"] == SENT[YOLO] + BAD
    assert models[YOLO]["failed"] == BAD
    assert models[MOBILENET]["requests"] == SENT[MOBILENET]
    assert models[YOLO]["inferences"] == SENT[YOLO]
    assert models[MOBILENET]["inferences"] == SENT[MOBILENET]
    assert models[CLOUDY]["cloud_requests"] == CLOUD
    assert models[CLOUDY]["cloud_usd"] == pytest.approx(CLOUD * PRICE_PER_1K / 1000)
    assert models[CLOUDY]["edge_usd"] == 0
    # Edge cost follows NPU seconds: yolov8s (110 fps) holds the NPU far longer per request.
    ratio = models[YOLO]["edge_usd"] / models[MOBILENET]["edge_usd"]
    seconds = models[YOLO]["compute_seconds"] / models[MOBILENET]["compute_seconds"]
    assert ratio == pytest.approx(seconds, rel=1e-4)
    assert seconds > 2  # 40 x 9.1 ms vs 120 x 0.58 ms
    assert models[YOLO]["edge_per_1k_usd"] > models[MOBILENET]["edge_per_1k_usd"]
    teams = {t["team"]: t for t in report["teams"]}
    assert teams["quality"]["models"] == [YOLO]
    assert teams["retail"]["requests"] == SENT[MOBILENET]
    assert teams["retail"]["cloud_requests"] == CLOUD
    [node] = [n for n in report["nodes"] if n["instance"] == target]
    assert node["energy_source"] == "measured"  # the simulated NPU reports watts
    assert dead not in {n["instance"] for n in report["nodes"]}
    for name in ("report.md", "cost_by_team.png", "cost_by_model.png", "requests.png"):
        assert (out / name).stat().st_size > 0, name
    markdown = (out / "report.md").read_text()
    assert "| quality | yolov8s |" in markdown
    assert "![cost_by_model](cost_by_model.png)" in markdown

    # --- the incident ------------------------------------------------------------------
    incident = _run(
        capsys, ["incident", *window, "-f", str(manifests), "-o", "json", "--slo-ms", "1"]
    )
    by_model = {m["model"]: m for m in incident["models"]}
    assert incident["served"] == total
    assert incident["failed"] == BAD
    assert by_model[YOLO]["failed"] == BAD
    assert incident["shed"] == 0
    assert incident["cloud_fallback_requests"] == CLOUD
    assert incident["cloud_fallback_spend_usd"] == pytest.approx(CLOUD * PRICE_PER_1K / 1000)
    assert incident["cloud_fallback_spend_at_list_price_usd"] == pytest.approx(
        incident["cloud_fallback_spend_usd"]
    )
    assert by_model[YOLO]["peak_p99_ms"] > 1
    assert by_model[YOLO]["minutes_over_slo"] > 0  # 9 ms per request against a 1 ms SLO
    assert [n["instance"] for n in incident["nodes_down"]] == [dead]
    relaxed = _run(capsys, ["incident", *window, "-o", "json", "--slo-ms", "60000"])
    assert relaxed["minutes_over_slo"] == 0
    assert relaxed["cloud_fallback_spend_at_list_price_usd"] is None
    # The table form prints and exits 0.
    assert cost_main(["incident", *window, "-f", str(manifests)]) == 0
    table = capsys.readouterr().out
    assert "reconciled" in table
    assert dead in table
