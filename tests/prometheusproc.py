"""A real Prometheus scraping agents' metrics ports every second, for showback tests.

Needs the `prometheus` binary: `running` fails without it under `make test`
(HATSWARM_REQUIRE_TOOLS), skips elsewhere (tests/externaltools.py).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from tests.agentproc import free_port
from tests.externaltools import missing
from tests.polling import poll


@contextmanager
def running(workdir: Path, metrics_ports: Sequence[int | str]) -> Iterator[str]:
    """Prometheus scraping 127.0.0.1:<port> for each of `metrics_ports` (or each "host:port"
    given as such) every second; its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        missing("prometheus", "make tools; Debian: apt-get install -y prometheus")
    targets = [p if isinstance(p, str) else f"127.0.0.1:{p}" for p in metrics_ports]
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "hatswarm-agent",
                        "scrape_timeout": "900ms",
                        "static_configs": [{"targets": targets}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert poll(ready, 20), log_path.read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
