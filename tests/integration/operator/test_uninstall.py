"""`helm uninstall`'s pre-delete hook against the emulated API and the real operator.

Without the hook, EdgeModels and InferencePools outlive the operator with its finalizer and hang
on delete (and so does their namespace). The test plays the Deployment controller: when the hook
scales the operator's Deployment to 0, it stops the operator process and deletes its Pod.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.harness import World, model_manifest, pool_manifest, wait_for

pytestmark = pytest.mark.integration

FINALIZER = "hatswarm.io/finalizer"
SELECTOR = {"app.kubernetes.io/name": "hatswarm-operator", "app.kubernetes.io/instance": "hs"}


def finalizers(world: World, kind: str, name: str) -> list[str]:
    obj = world.get(kind, name) or {}
    return list(obj.get("metadata", {}).get("finalizers") or [])


def operator_objects(world: World) -> None:
    """The Deployment and Pod the chart would have made for the operator process."""
    world.store.put(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "hs-hatswarm-operator", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": SELECTOR},
                "template": {
                    "metadata": {"labels": SELECTOR},
                    "spec": {"containers": [{"name": "operator", "image": "op:test"}]},
                },
            },
        }
    )
    world.store.put(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "hs-hatswarm-operator-0",
                "namespace": "default",
                "labels": SELECTOR,
            },
            "spec": {"containers": [{"name": "operator", "image": "op:test"}]},
            "status": {"phase": "Running"},
        }
    )


def hook(world: World, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "hatswarm_operator.kube.uninstall",
        "--namespace", "default", "--deployment", "hs-hatswarm-operator",
        "--selector", ",".join(f"{k}={v}" for k, v in SELECTOR.items()),
        "--timeout", "60", *extra,
    ]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=world.kube.env(PYTHONUNBUFFERED="1")
    )


def test_uninstall_hook_leaves_nothing_stuck_on_the_finalizer(world: World, mlp: Path) -> None:
    for node in ("pi-1", "pi-2"):
        world.add_node(node)
    world.kube.apply(pool_manifest("floor"), model_manifest("mlp", mlp, replicas=2))
    op = world.start_operator()
    operator_objects(world)
    wait_for(lambda: world.status("EdgeModel", "mlp").get("ready") == "2/2", timeout=120)
    assert FINALIZER in finalizers(world, "EdgeModel", "mlp")
    assert FINALIZER in finalizers(world, "InferencePool", "floor")

    def deployment_controller() -> None:
        def scaled_down() -> bool:
            dep: dict[str, Any] = world.get("Deployment", "hs-hatswarm-operator") or {}
            return bool(dep.get("spec", {}).get("replicas") == 0)

        wait_for(scaled_down, timeout=60, what="the hook scaling the operator down")
        op.stop()
        world.kube.kubectl("delete", "pod", "hs-hatswarm-operator-0", "--wait=false")

    controller = threading.Thread(target=deployment_controller)
    controller.start()
    result = hook(world)
    controller.join(timeout=90)
    assert result.returncode == 0, result.stderr
    assert "released 2 object(s)" in result.stdout
    assert "released edgemodels/default/mlp" in result.stderr
    assert op.proc.poll() is not None
    assert finalizers(world, "EdgeModel", "mlp") == []
    assert finalizers(world, "InferencePool", "floor") == []
    # The models keep serving; deleting the objects no longer waits for an operator.
    assert len(world.ready_on("mlp")) == 2
    world.kube.kubectl("delete", "em/mlp", "ipool/floor", "--timeout=20s", check=True)
    assert world.get("EdgeModel", "mlp") is None and world.get("InferencePool", "floor") is None

    again = hook(world)  # idempotent: a retried hook finds nothing to do
    assert again.returncode == 0 and "released 0 object(s)" in again.stdout


def test_uninstall_hook_fails_clearly_while_the_operator_keeps_running(world: World) -> None:
    """Nobody scales the pods down: the hook times out naming them (helm reports the failure;
    `helm uninstall --no-hooks` skips it)."""
    operator_objects(world)
    result = hook(world, "--timeout", "2")
    assert result.returncode == 1
    assert "operator pods still running after 2s: ['hs-hatswarm-operator-0']" in result.stderr
