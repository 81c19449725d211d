"""The operator over time: scale, cordon, a settings change, a restart without reloads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.operator.harness import World, model_manifest, pool_manifest, wait_for

pytestmark = pytest.mark.integration


def _counter(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            return float(m.group(2))
    raise AssertionError(f"{name}{{{want}}} not in metrics")


def test_scale_cordon_settings_change_and_restart(world: World, mlp: Path) -> None:
    world.add_nodes("pi-1", "pi-2", "pi-3")
    world.kube.apply(pool_manifest("floor"), model_manifest("mlp", mlp, replicas=1))
    op = world.start_operator()
    wait_for(lambda: world.status("EdgeModel", "mlp").get("ready") == "1/1", timeout=120)

    # `kubectl scale` sets spec.replicas.desired through the scale subresource.
    world.kube.kubectl("scale", "em/mlp", "--replicas=2", check=True)
    wait_for(lambda: world.status("EdgeModel", "mlp").get("ready") == "2/2", timeout=120)
    assert len(world.ready_on("mlp")) == 2

    # Cordon a node that holds a replica: it leaves the pool and the replica moves.
    holder = world.ready_on("mlp")[0]
    world.kube.kubectl("cordon", holder, check=True)

    def left() -> bool:
        nodes = {n["name"]: n for n in world.status("InferencePool", "floor").get("nodes", [])}
        return (
            nodes[holder]["ready"] is False
            and nodes[holder].get("reason") == "NodeUnschedulable"
            and holder not in world.ready_on("mlp")
            and len(world.ready_on("mlp")) == 2
        )

    wait_for(left, timeout=120, what=f"{holder} out of the pool, replica moved")
    assert world.status("InferencePool", "floor")["nodesReady"] == 2
    world.kube.kubectl("uncordon", holder, check=True)
    wait_for(lambda: world.status("InferencePool", "floor").get("nodesReady") == 3)

    # A change to the agent settings rolls the DaemonSet (new settings hash on the template).
    ds = world.get("DaemonSet", "hatswarm-agent-floor-cpu")
    assert ds is not None
    before = ds["spec"]["template"]["metadata"]["annotations"]["hatswarm.io/agent-settings-hash"]
    changed = pool_manifest("floor")
    changed["spec"]["agent"]["image"] = "hatswarm/agent:test-2"
    world.kube.apply(changed)

    def rolled() -> bool:
        d = world.get("DaemonSet", "hatswarm-agent-floor-cpu") or {}
        tpl = d["spec"]["template"]
        return bool(
            tpl["spec"]["containers"][0]["image"] == "hatswarm/agent:test-2"
            and tpl["metadata"]["annotations"]["hatswarm.io/agent-settings-hash"] != before
        )

    wait_for(rolled, what="DaemonSet patched")

    # Restart the operator: it reads placement back from the agents and loads nothing again.
    loaded = world.loaded_at("mlp")
    loading_events = len(world.events("mlp", "Loading"))
    op.stop()
    op2 = world.start_operator()
    wait_for(
        lambda: _counter(op2.metrics(), "hatswarm_operator_reconciles_total",
                         kind="InferencePool", trigger="loop", result="ok") >= 10,
        timeout=120,
        what="ten ticks of the new operator",
    )  # fmt: skip
    assert world.loaded_at("mlp") == loaded
    assert len(world.events("mlp", "Loading")) == loading_events
    assert world.status("EdgeModel", "mlp")["ready"] == "2/2"
    metrics = op2.metrics()
    assert _counter(metrics, "hatswarm_operator_nodes", state="up") == 3
    assert _counter(metrics, "hatswarm_operator_placement_duration_seconds_count") >= 10
    assert "floor" in str(op2.health())
