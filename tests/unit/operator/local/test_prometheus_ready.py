"""`hatswarm up --prometheus` announces Prometheus only once it answers its API.

While its TSDB opens, Prometheus answers every API path with a plain-text 503 ("Service
Unavailable"); a client that queried the announced URL at once got text, not JSON (a CI failure
of tests/integration/local/test_up_prometheus.py). The HTTP server here plays that startup phase
on purpose, which a real Prometheus does only for a moment."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from hatswarm_operator.local.processes import LocalPrometheus, free_port


@pytest.fixture
async def starting_prometheus() -> AsyncIterator[tuple[str, list[str]]]:
    """Answers /-/ready with 503 three times, then 200; records the paths asked."""
    asked: list[str] = []

    async def ready(request: web.Request) -> web.Response:
        asked.append(request.path)
        if len(asked) <= 3:
            return web.Response(status=503, text="Service Unavailable")
        return web.Response(text="Prometheus Server is Ready.\n")

    app = web.Application()
    app.router.add_get("/-/ready", ready)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", asked
    finally:
        await runner.cleanup()


@pytest.fixture
def running() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for prometheus' own (only its liveness is read)."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def exited() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sh", "-c", "exit 1"])
    proc.wait()
    return proc


async def test_ready_waits_through_the_startup_503s(
    starting_prometheus: tuple[str, list[str]], running: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    url, asked = starting_prometheus
    await LocalPrometheus(running, url, tmp_path / "prometheus.log").ready(within=10)
    assert asked == ["/-/ready"] * 4


async def test_ready_reports_an_exited_prometheus_with_its_log(
    exited: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    log = tmp_path / "prometheus.log"
    log.write_text('err="error loading config from \\"prometheus.yml\\": parsing YAML"\n')
    with pytest.raises(RuntimeError, match=r"exited with code 1:\n.*parsing YAML"):
        await LocalPrometheus(exited, f"http://127.0.0.1:{free_port()}", log).ready(within=10)


async def test_ready_gives_up_after_its_timeout(
    running: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    with pytest.raises(TimeoutError, match="not ready after"):
        await LocalPrometheus(running, url, tmp_path / "prometheus.log").ready(within=0.3)
