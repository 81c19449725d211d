"""The operator on a mixed floor: it places HEFs by the chip each agent reports (issue 13).

Four nodes, one of each kind: agents that import the HailoRT test double as a Hailo-8L, a
Hailo-8 and a Hailo-10H (tests/fakes, HATSWARM_FAKE_HAILO_CHIP), and a plain CPU node (no
HailoRT: this machine). All run `--backend auto`. One node is mislabelled: its label says
hailo8l, HailoRT says hailo8. A fifth agent was pinned to `hailo` on a node without a device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.hailodouble import agent_env, write_hef
from tests.integration.operator.harness import World, pool_manifest, wait_for

pytestmark = pytest.mark.integration

LABEL = "hatswarm.io/accelerator"


def artifact(accelerator: str, path: Path) -> dict[str, Any]:
    return {
        "accelerator": accelerator,
        "format": "onnx" if accelerator == "cpu" else "hef",
        "uri": path.resolve().as_uri(),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def loaded(world: World, node: str, model: str) -> tuple[str, str] | None:
    """(sha256, backend) of `model` READY on `node`'s agent, if it is."""
    for m in world.node_status(node).models:
        if m.name == model and m.state == 2:  # MODEL_STATE_READY
            return m.sha256, m.backend
    return None


def test_hefs_go_where_the_reported_chip_runs_them(world: World, tmp_path: Path, mlp: Path) -> None:
    auto = ("--backend", "auto")
    world.add_node("pi-8l", agent_args=(*auto, "--accelerator", "hailo8l"),
                   env=agent_env("hailo8l"), **{LABEL: "hailo8l"})  # fmt: skip
    world.add_node("pi-8", agent_args=(*auto, "--accelerator", "hailo8l"),
                   env=agent_env("hailo8"), **{LABEL: "hailo8l"})  # fmt: skip  # mislabelled
    world.add_node("pi-10h", agent_args=(*auto, "--accelerator", "hailo10h"),
                   env=agent_env("hailo10h"), **{LABEL: "hailo10h"})  # fmt: skip
    world.add_node("pi-cpu", agent_args=(*auto, "--accelerator", "cpu"))
    world.add_node("pi-nohw", agent_args=("--backend", "hailo", "--accelerator", "hailo8"),
                   env=agent_env("none"), **{LABEL: "hailo8"})  # fmt: skip
    hefs = {chip: write_hef(tmp_path / f"det-{chip}.bin", chip) for chip in ("hailo8l", "hailo8",
                                                                             "hailo10h")}  # fmt: skip
    model = {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": "det", "namespace": "default"},
        "spec": {
            "pool": "floor",
            "version": "1.0.0",
            "artifacts": [*(artifact(c, p) for c, p in hefs.items()), artifact("cpu", mlp)],
            "replicas": {"min": 1, "max": 5, "desired": 5},
            "resources": {"memoryMiB": 64, "npuContexts": 1},
        },
    }
    pool = pool_manifest(
        "floor",
        accelerators=["hailo8l", "hailo8", "hailo10h", "cpu"],
        agent={"backend": "auto", "image": "hatswarm/agent:test"},
    )
    world.kube.apply(pool, model)
    world.start_operator()

    # One DaemonSet per chip class, each asking for the NPU only where there is one.
    for cls, npu in (("hailo8l", True), ("hailo8", True), ("hailo10h", True), ("cpu", False)):
        ds = wait_for(lambda c=cls: world.get("DaemonSet", f"hatswarm-agent-floor-{c}"), what=cls)
        limits = ds["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert ("squat.ai/hailo" in limits) is npu

    # Each node runs the artifact of the chip its agent reported; the CPU node the ONNX one.
    sha = {c: hashlib.sha256(p.read_bytes()).hexdigest() for c, p in hefs.items()}
    sha["cpu"] = hashlib.sha256(mlp.read_bytes()).hexdigest()
    expected = {
        "pi-8l": (sha["hailo8l"], "hailo"),
        "pi-8": (sha["hailo8"], "hailo"),  # the chip, not the label
        "pi-10h": (sha["hailo10h"], "hailo"),
        "pi-cpu": (sha["cpu"], "onnxruntime"),
    }
    wait_for(
        lambda: {n: loaded(world, n, "det") for n in expected} == expected,
        timeout=120,
        what="det on every usable node with its chip's artifact",
    )
    assert loaded(world, "pi-nohw", "det") is None

    status = world.status("InferencePool", "floor")
    nodes = {n["name"]: n for n in status["nodes"]}
    assert {n: nodes[n]["accelerator"] for n in expected} == {
        "pi-8l": "hailo8l",
        "pi-8": "hailo8",
        "pi-10h": "hailo10h",
        "pi-cpu": "cpu",
    }
    assert status["capacity"]["nodesByAccelerator"] == {
        "hailo8l": 1,
        "hailo8": 1,
        "hailo10h": 1,
        "cpu": 1,
    }
    # The pinned agent without a chip: out of the pool, a condition and an Event say why.
    assert nodes["pi-nohw"]["ready"] is False
    assert nodes["pi-nohw"]["reason"].startswith("BackendUnavailable: backend hailo unavailable")
    backends = world.condition("InferencePool", "floor", "BackendsAvailable")
    assert backends["status"] == "False" and backends["reason"] == "BackendUnavailable"
    assert "pi-nohw: backend hailo unavailable: no usable Hailo device" in backends["message"]
    wait_for(lambda: world.events("floor", "BackendUnavailable"), what="BackendUnavailable Event")
    (event,) = world.events("floor", "BackendUnavailable")  # once, not every tick
    assert event["type"] == "Warning" and "node pi-nohw" in event["message"]
    assert world.agents["pi-nohw"].proc.poll() is None  # running, not crash-looping
    # The mislabelled node: placed by its chip, and the label is called out.
    wait_for(lambda: world.events("floor", "AcceleratorMismatch"), what="AcceleratorMismatch Event")
    (mismatch,) = world.events("floor", "AcceleratorMismatch")
    assert "hatswarm.io/accelerator=hailo8l" in mismatch["message"]
    assert "identified a hailo8" in mismatch["message"]

    # Dropping chips from the pool deletes their DaemonSets (and only the pool's own).
    narrowed = pool_manifest(
        "floor", accelerators=["hailo8l", "cpu"], agent={"backend": "auto", "image": "x:1"}
    )
    world.kube.apply(narrowed)
    wait_for(
        lambda: (
            world.get("DaemonSet", "hatswarm-agent-floor-hailo8") is None
            and world.get("DaemonSet", "hatswarm-agent-floor-hailo10h") is None
        ),
        what="dropped chip classes deleted",
    )
    assert world.get("DaemonSet", "hatswarm-agent-floor-hailo8l") is not None
    wait_for(lambda: world.events("floor", "Deleted"), what="a Deleted Event on the pool")
