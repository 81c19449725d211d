"""A real kopf operator in a subprocess against the emulator: status on create, finalizers."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.kubeemu.widgets import widget
from tests.kubeemu import KubeApi, ResourceType, Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPERATOR = Path(__file__).with_name("tiny_operator.py")


@pytest.fixture
def operator(kube_api: KubeApi, widgets: ResourceType, tmp_path: Path) -> Iterator[Path]:
    """``kopf run --standalone`` of tiny_operator.py; yields its log file."""
    log = tmp_path / "kopf.log"
    kube_api.store.put(widget("early"))  # exists before the operator starts: initial listing
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "--standalone",
                "--all-namespaces",
                "--verbose",
                str(OPERATOR),
            ],
            env=kube_api.env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield log
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _phase(name: str, widgets: ResourceType) -> Any:
    def check(store: Store) -> Any:
        found = [w for w in store.find("Widget") if w["metadata"]["name"] == name]
        return found and (found[0].get("status") or {}).get("phase") == "Ready"

    return check


def test_kopf_sets_status_and_completes_deletion(
    kube_api: KubeApi, widgets: ResourceType, operator: Path
) -> None:
    store = kube_api.store
    kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(widget("late")), check=True)
    try:
        for name in ("early", "late"):
            store.wait_for(_phase(name, widgets), timeout=30)
    except TimeoutError:
        pytest.fail(f"kopf never set the status:\n{operator.read_text()[-4000:]}")

    kube_api.server.close_watches()  # kopf must resume from its last resourceVersion
    kube_api.store.put(widget("resumed"))
    try:
        store.wait_for(_phase("resumed", widgets), timeout=30)
    except TimeoutError:
        pytest.fail(f"kopf did not resume watching:\n{operator.read_text()[-4000:]}")

    late = store.get(widgets, "default", "late")
    assert late["status"] == {"phase": "Ready", "observedSize": "small"}
    assert late["metadata"]["finalizers"] == ["kubeemu.test/tiny-operator"]
    assert late["metadata"]["generation"] == 1  # status and metadata writes only

    deleted = kube_api.kubectl("delete", "widget", "late", "early", "resumed", "--timeout=30s")
    assert deleted.returncode == 0, f"{deleted.stderr}\n{operator.read_text()[-4000:]}"
    assert store.find("Widget") == []

    def posted(store: Store) -> set[str]:
        names = {e["involvedObject"]["name"] for e in store.find("Event") if e["reason"] == "Ready"}
        return names if names >= {"early", "late", "resumed"} else set()

    assert store.wait_for(posted, timeout=30)  # kopf.info() -> core v1 Events, generateName
