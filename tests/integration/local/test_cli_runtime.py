"""The operator CLI's runtime failures that need a socket: a dead endpoint, an unknown model, a
load test with failed requests, a dead Prometheus. Each exits 1 with one line naming the URL or
model; a clean run exits 0 and prints data on stdout in the `-o` format asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentproc import AgentProcess, free_port, start_agents
from tests.onnxmodels import build_mlp

pytestmark = pytest.mark.integration

HATSWARM = Path(sys.executable).parent / "hatswarm"


def hatswarm(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HATSWARM), *argv], capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, AgentProcess]]:
    """fast: an onnxruntime MLP; slow: a simulated NPU at 5 inferences/s admitting one request
    at a time, so a load of four clients gets some requests refused."""
    model = build_mlp(tmp_path_factory.mktemp("cli-models") / "mlp.onnx")
    fast, slow = start_agents(
        [
            ["--model", f"mlp={model}"],
            [
                "--model", f"mlp={model}", "--backend", "simulated", "--accelerator", "hailo8l",
                "--option", "fps_batch1=5", "--queue-limit", "1", "--max-batch-size", "1",
            ],
        ]
    )  # fmt: skip
    yield {"fast": fast, "slow": slow}
    fast.stop()
    slow.stop()


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1 and fragment in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_loadtest_against_a_dead_url() -> None:
    port = free_port()
    done = hatswarm("loadtest", "--url", f"127.0.0.1:{port}", "--model", "m", "--quiet")
    assert_one_line(done, 1, f"hatswarm loadtest: error: cannot reach 127.0.0.1:{port}")
    assert done.stdout == ""


def test_loadtest_unknown_model(agents: dict[str, AgentProcess]) -> None:
    done = hatswarm("loadtest", "--url", agents["fast"].address, "--model", "nope", "--quiet")
    assert_one_line(done, 1, "model 'nope': unknown model 'nope'")


def test_loadtest_output_formats_and_files(agents: dict[str, AgentProcess], tmp_path: Path) -> None:
    url = agents["fast"].address
    base = ["loadtest", "--url", url, "--model", "mlp", "--duration", "1", "--concurrency", "1"]
    done = hatswarm(*base, "-o", "json", "--quiet", "--out", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)  # stdout is only the JSON
    [row] = printed["results"]
    assert row["model"] == "mlp" and row["ok"] > 0 and row["failed"] == 0
    assert json.loads((tmp_path / "r.json").read_text())["url"] == url
    # The old `--json FILE` still writes the file, with a deprecation warning.
    old = hatswarm(*base, "--quiet", "--json", str(tmp_path / "old.json"))
    assert old.returncode == 0, old.stderr
    assert "--json is deprecated" in old.stderr
    assert json.loads((tmp_path / "old.json").read_text())["results"][0]["model"] == "mlp"
    assert old.stdout.startswith("MODEL ")  # the table


def test_loadtest_with_failed_requests_exits_1(agents: dict[str, AgentProcess]) -> None:
    done = hatswarm(
        "loadtest", "--url", agents["slow"].address, "--model", "mlp", "--duration", "2",
        "--concurrency", "4", "--quiet", "-o", "json",
    )  # fmt: skip
    [row] = json.loads(done.stdout)["results"]
    assert row["failed"] > 0 and row["ok"] > 0
    assert_one_line(done, 1, f"{row['failed']} of {row['requests']} requests failed (mlp: ")


def test_cost_incident_against_a_dead_prometheus() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = hatswarm("cost", "incident", "--from", "now-1h", "--prometheus", url)
    assert_one_line(done, 1, f"cannot reach Prometheus at {url}")
