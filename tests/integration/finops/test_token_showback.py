"""Showback in tokens (`hatswarm cost report`) against a real Prometheus scraping a real agent.

A generative agent (a tiny onnxruntime-genai model) answers some chats itself and sends prompts
over its context to the cloud stand-in (tests/cloudllm.py, an OpenAI-compatible server in its
own process). Prometheus scrapes the agent every second; the report must show each model's edge
and cloud tokens exactly as the agent and the cloud counted them, the cloud's tokens at the
pool's per-1M prices, and a team's tokens summed over its models.

Needs the `prometheus` binary: fails without it under `make test`, skips elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml
from hatswarm_operator.cli.cost import main as cost_main
from hatswarm_operator.finops.promql import Prometheus

from tests import prometheusproc
from tests.agentproc import free_port, start_agent
from tests.cloudllm import CloudLLM, running
from tests.genaimodels import build_genai_model
from tests.polling import poll

pytestmark = pytest.mark.integration

LONG = "hello world " * 300
IN_PRICE, OUT_PRICE = 2.5, 10.0


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """(Prometheus URL, the agent metrics port it scrapes every second)."""
    metrics_port = free_port()
    with prometheusproc.running(tmp_path, [metrics_port]) as url:
        yield url, metrics_port


def _value(prom: Prometheus, expr: str) -> float | None:
    series = prom.query(expr)
    return series[0].value if series else None


def test_report_shows_tokens_by_model_and_team(
    tmp_path: Path, prometheus: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    url, metrics_port = prometheus
    model = build_genai_model(tmp_path / "chat", seed=7)
    with running() as cloud:
        http = free_port()
        agent = start_agent(
            ["--node-name", "pi-01", "--model", f"chat@genai={model}",
             "--model", f"intent@genai={model}", "--http-port", str(http),
             "--metrics-port", str(metrics_port), "--routing-table",
             str(_table(tmp_path, cloud))],
            timeout=120,
        )  # fmt: skip
        try:
            prom = Prometheus(url)
            assert poll(lambda: _value(prom, f'up{{instance="127.0.0.1:{metrics_port}"}}'), 20)
            start = time.time() - 0.05
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="x")
            edge: dict[str, list[int]] = {"chat": [0, 0], "intent": [0, 0]}
            for name, n in (("chat", 3), ("intent", 2)):
                for i in range(n):
                    answer = client.completions.create(
                        model=name, prompt=f"hello world {i}", max_tokens=8, temperature=0
                    )
                    assert answer.usage is not None
                    edge[name][0] += answer.usage.prompt_tokens
                    edge[name][1] += answer.usage.completion_tokens
            for _ in range(2):
                client.completions.create(model="chat", prompt=LONG, max_tokens=5)
            stats = cloud.stats()
            assert stats["calls"] == 2
            total = sum(sum(v) for v in edge.values()) + 1200 + 10
            assert poll(lambda: _value(prom, "sum(hatswarm_tokens_total)") == total, 15)
            end = time.time()
            prom.close()
        finally:
            agent.stop()

    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(yaml.safe_dump_all(_manifests(cloud.base_url)))
    out = tmp_path / "report"
    window = ["--from", f"{start:.3f}", "--to", f"{end:.3f}", "--prometheus", url]
    assert cost_main(["report", *window, "-f", str(manifests), "--out", str(out)]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    models = {m["model"]: m for m in report["models"]}
    for name in ("chat", "intent"):
        assert models[name]["edge_prompt_tokens"] == edge[name][0]
        assert models[name]["edge_completion_tokens"] == edge[name][1]
    assert models["chat"]["cloud_prompt_tokens"] == stats["prompt_tokens"] == 1200
    assert models["chat"]["cloud_completion_tokens"] == stats["completion_tokens"] == 10
    assert models["intent"]["cloud_prompt_tokens"] == 0
    # The agent priced the cloud's tokens at the table's per-1M prices.
    assert models["chat"]["cloud_usd"] == pytest.approx((1200 * IN_PRICE + 10 * OUT_PRICE) / 1e6)
    assert models["chat"]["cloud_per_1m_tokens_usd"] == pytest.approx(
        models["chat"]["cloud_usd"] / 1210 * 1e6, rel=1e-4
    )
    # Generations hold the device: their time is compute time, so they carry the edge cost.
    assert models["chat"]["edge_usd"] > 0 and models["intent"]["edge_usd"] > 0
    assert models["chat"]["edge_per_1m_tokens_usd"] == pytest.approx(
        models["chat"]["edge_usd"] / sum(edge["chat"]) * 1e6, rel=1e-4
    )
    teams = {t["team"]: t for t in report["teams"]}
    assert teams["assistants"]["edge_tokens"] == sum(edge["chat"]) + sum(edge["intent"])
    assert teams["assistants"]["cloud_tokens"] == 1210
    markdown = (out / "report.md").read_text()
    assert "## Tokens by team" in markdown and "| assistants |" in markdown
    assert (out / "tokens_by_model.png").stat().st_size > 0


def _table(tmp: Path, cloud: CloudLLM) -> Path:
    path = tmp / "table.json"
    path.write_text(
        json.dumps(
            {
                "routes": [{"model": "chat", "escalateLongPrompts": True}],
                "cloud": {
                    "openaiBaseUrl": cloud.base_url,
                    "openaiModel": "big",
                    "maxShare": 1.0,
                    "pricePer1mInputUsd": IN_PRICE,
                    "pricePer1mOutputUsd": OUT_PRICE,
                },
            }
        )
    )
    return path


def _manifests(base_url: str) -> list[dict[str, object]]:
    pool = {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "kiosks"},
        "spec": {
            "cloudFallback": {
                "openai": {
                    "baseUrl": base_url,
                    "model": "big",
                    "pricePer1MInputUsd": IN_PRICE,
                    "pricePer1MOutputUsd": OUT_PRICE,
                }
            }
        },
    }
    models = [
        {
            "apiVersion": "hatswarm.io/v1alpha1",
            "kind": "EdgeModel",
            "metadata": {"name": name},
            "spec": {
                "pool": "kiosks",
                "version": "1",
                "artifacts": [
                    {
                        "accelerator": "cpu",
                        "format": "onnx",
                        "uri": "file:///m.onnx",
                        "sha256": "0" * 64,
                    }
                ],
                "costAttribution": {"team": "assistants"},
            },
        }
        for name in ("chat", "intent")
    ]
    return [pool, *models]
