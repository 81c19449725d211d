"""A real Prometheus scraping agents' metrics ports every second, for showback tests.

Started and awaited the way `hatswarm up` starts its own (`local.processes.start_prometheus`,
`LocalPrometheus.ready`), with a scrape config of the tests' own. Needs the `prometheus`
binary: `running` fails without it under `make test` (HATSWARM_REQUIRE_TOOLS), skips elsewhere
(tests/externaltools.py).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hatswarm_operator.local.processes import start_prometheus

from tests.externaltools import missing


@contextmanager
def running(workdir: Path, metrics_ports: Sequence[int | str]) -> Iterator[str]:
    """Prometheus scraping 127.0.0.1:<port> for each of `metrics_ports` (or each "host:port"
    given as such) every second; its URL."""
    if shutil.which("prometheus") is None:
        missing("prometheus", "make tools; Debian: apt-get install -y prometheus")
    targets = [p if isinstance(p, str) else f"127.0.0.1:{p}" for p in metrics_ports]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "hatswarm-agent",
                "scrape_timeout": "900ms",
                "static_configs": [{"targets": targets}],
            }
        ],
    }
    prometheus = start_prometheus(config, workdir / "prometheus")
    try:
        asyncio.run(prometheus.ready(within=20))
        yield prometheus.url
    finally:
        prometheus.stop()
