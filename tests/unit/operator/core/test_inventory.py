"""What a node is to placement: the chip its agent reports, labels as the override, and agents
that cannot open their backend kept out of the pool with the reason."""

from __future__ import annotations

import pytest
from hatswarm_operator.core.inventory import NodeReport, NodeState, observe, placement_accelerator
from hatswarm_operator.core.status import backends_condition

LABEL = "hatswarm.io/accelerator"


@pytest.mark.parametrize(
    ("label", "backend", "reported", "expected"),
    [
        # HailoRT identified the chip: the chip, whatever the label says.
        ("hailo8", "hailo", "hailo8l", "hailo8l"),
        (None, "hailo", "hailo10h", "hailo10h"),
        # A CPU-only agent runs no HEF, whatever the node carries.
        ("hailo8", "onnxruntime", "cpu", "cpu"),
        # Agents that cannot identify hardware: the label overrides what they say.
        ("hailo8", "simulated", "hailo8l", "hailo8"),
        (None, "simulated", "hailo8l", "hailo8l"),
        ("tpu", "simulated", "hailo8l", "hailo8l"),  # not an accelerator: ignored
        ("hailo10h", "", "cpu", "hailo10h"),  # a gateway or an old agent that says nothing
    ],
)
def test_placement_accelerator(
    label: str | None, backend: str, reported: str, expected: str
) -> None:
    labels = {LABEL: label} if label else {}
    report = NodeReport(accelerator=reported, backend=backend)
    assert placement_accelerator(labels, report) == expected


def test_observe_takes_the_reported_chip_and_flags_a_wrong_label() -> None:
    node = NodeState("pi-1", "10.0.0.1:8001", labels={LABEL: "hailo8"})
    seen = observe(node, NodeReport(accelerator="hailo8l", backend="hailo"), 1.0, 3)
    assert seen.accelerator == "hailo8l" and seen.in_pool
    assert "labelled hatswarm.io/accelerator=hailo8" in seen.accelerator_mismatch
    assert "identified a hailo8l" in seen.accelerator_mismatch
    right = observe(NodeState("pi-2", "a", labels={LABEL: "hailo8l"}), seen_report(), 1.0, 3)
    assert right.accelerator_mismatch == ""


def seen_report() -> NodeReport:
    return NodeReport(accelerator="hailo8l", backend="hailo")


def test_an_agent_without_its_backend_is_out_of_the_pool_and_says_why() -> None:
    node = NodeState("pi-3", "10.0.0.3:8001", labels={LABEL: "hailo8"})
    why = "backend hailo unavailable: no usable Hailo device (HAILO_OUT_OF_PHYSICAL_DEVICES)"
    seen = observe(node, NodeReport(accelerator="hailo8", backend="", backend_error=why), 2.0, 3)
    assert seen.up and not seen.in_pool
    assert seen.out_reason == f"BackendUnavailable: {why}"
    fine = observe(
        NodeState("pi-4", "b"), NodeReport(accelerator="cpu", backend="onnxruntime"), 2, 3
    )
    cond = backends_condition([seen, fine], 3.0, 1)
    assert (cond.status, cond.reason) == ("False", "BackendUnavailable")
    assert cond.message == f"pi-3: {why}"
    ok = backends_condition([fine], 3.0, 1)
    assert (ok.status, ok.reason, ok.message) == ("True", "BackendsOpen", "onnxruntime on cpu")
    assert backends_condition([], 3.0, 1).status == "Unknown"
