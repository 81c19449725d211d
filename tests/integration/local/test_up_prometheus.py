"""`hatswarm up --prometheus`: a real Prometheus scrapes every agent and the control loop."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.externaltools import missing
from tests.polling import poll
from tests.upproc import Up, alive

pytestmark = pytest.mark.integration


def test_up_with_prometheus_scrapes_agents_and_loop(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        missing("prometheus", "make tools; Debian: apt-get install -y prometheus")
    with Up(tmp_path / "state", "--nodes", "2", "--prometheus") as pool:
        url = pool.line("Prometheus on").split()[4]
        deadline = time.monotonic() + 90
        up: dict[str, float] = {}
        loaded = 0.0
        while time.monotonic() < deadline:
            try:
                res = httpx.get(f"{url}/api/v1/query", params={"query": "up"}).json()
                up = {r["metric"]["job"] + "/" + r["metric"]["instance"]: float(r["value"][1])
                      for r in res["data"]["result"]}  # fmt: skip
                res = httpx.get(
                    f"{url}/api/v1/query", params={"query": "sum(hatswarm_models_loaded)"}
                ).json()
                loaded = (
                    float(res["data"]["result"][0]["value"][1]) if res["data"]["result"] else 0.0
                )
            except httpx.HTTPError:
                pass
            if len(up) == 3 and all(v == 1 for v in up.values()) and loaded >= 2:
                break
            time.sleep(0.2)
        assert sorted(k.split("/")[0] for k in up) == [
            "hatswarm-agent",
            "hatswarm-agent",
            "hatswarm-operator",
        ]
        assert all(v == 1 for v in up.values()), up
        assert loaded >= 2  # the bundled model's two replicas, as the agents export it
        children = pool.children()
    # Gone within a second (checked as soon as they are, not after sleeping that second).
    assert poll(lambda: not alive(children), within=1.0, every=0.05), alive(children)
