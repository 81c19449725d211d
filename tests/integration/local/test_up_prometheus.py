"""`hatswarm up --prometheus`: a real Prometheus scrapes every agent and the control loop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.externaltools import missing
from tests.polling import poll

pytestmark = pytest.mark.integration

HATSWARM = Path(sys.executable).parent / "hatswarm"


def test_up_with_prometheus_scrapes_agents_and_loop(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        missing("prometheus", "make tools; Debian: apt-get install -y prometheus")
    proc = subprocess.Popen(
        [str(HATSWARM), "up", "--nodes", "2", "--quiet", "--prometheus",
         "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    ).start()
    try:
        deadline = time.monotonic() + 90
        url = ""
        while not url and time.monotonic() < deadline:
            url = next((x.split()[4] for x in lines if "Prometheus on" in x), "")
            time.sleep(0.2)
        assert url, "".join(lines)
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
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(lines)
    # Gone within a second (checked as soon as they are, not after sleeping that second).
    assert poll(lambda: not _alive(children), within=1.0, every=0.05), _alive(children)


def _alive(pids: list[int]) -> list[int]:
    """The processes of `pids` still running (zombies and vanished ones are not)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out
