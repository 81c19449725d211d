"""Placement of generative and embedding models: by accelerator (the Hailo-10H HEF on Hailo-10H
nodes, the CPU build elsewhere, never a Hailo-8/8L NPU) and by the memory each build declares."""

from __future__ import annotations

from hatswarm_operator.core.placement import CPU, Artifact, Model, Node, Placement, Reason, place

LLM_HEF = Artifact("hailo10h", "hef", "file:///chat.hef", "a" * 64, memory_mib=512)
LLM_CPU = Artifact(CPU, "onnx", "file:///chat.tar.gz", "b" * 64, memory_mib=1200)
HEF8 = Artifact("hailo8", "hef", "file:///det8.hef", "c" * 64)


def floor(memory: int = 4096) -> list[Node]:
    return [
        Node("pi-10h", "hailo10h", memory, 4),
        Node("pi-8", "hailo8", memory, 4),
        Node("pi-8l", "hailo8l", memory, 4),
        Node("pi-cpu", CPU, memory, 0),
    ]


def chat(*artifacts: Artifact, replicas: int = 1, task: str = "generate") -> Model:
    return Model("chat", artifacts or (LLM_HEF, LLM_CPU), replicas, 256, task=task)


def on(p: Placement, model: str = "chat") -> dict[str, str]:
    """node -> accelerator of the artifact the replica there runs."""
    return {r.node: r.artifact.accelerator for r in p.replicas if r.model == model}


def test_the_hailo10h_hef_on_the_hailo10h_node_and_the_cpu_build_everywhere_else() -> None:
    p = place(floor(), [chat(replicas=4)])
    assert on(p) == {"pi-10h": "hailo10h", "pi-8": CPU, "pi-8l": CPU, "pi-cpu": CPU}
    assert p.unplaced == ()


def test_one_replica_goes_to_the_hailo10h_first() -> None:
    p = place(floor(), [chat(replicas=1)])
    assert on(p) == {"pi-10h": "hailo10h"}


def test_a_generative_model_never_runs_a_hailo8_hef_even_when_handed_one() -> None:
    """The API refuses such an artifact; a hand-made Model gets the same rule in placement."""
    gen = place(floor(), [chat(HEF8, LLM_CPU, replicas=4)])
    assert on(gen) == {"pi-10h": CPU, "pi-8": CPU, "pi-8l": CPU, "pi-cpu": CPU}
    tensor = place(floor(), [chat(HEF8, LLM_CPU, replicas=4, task="tensor")])
    assert on(tensor)["pi-8"] == "hailo8"  # the same artifacts on a tensor model: the NPU


def test_only_hailo8_artifacts_leave_a_generative_model_unplaced_saying_why() -> None:
    p = place(floor(), [chat(HEF8, replicas=1, task="embed")])
    assert p.replicas == ()
    (u,) = p.unplaced
    assert u.reason is Reason.NO_ACCELERATOR_ARTIFACT
    assert "has: none; task embed ignores hailo8; pool has:" in u.message


def test_each_build_takes_the_memory_it_declares() -> None:
    """1024 MiB nodes: the 512 MiB HEF fits the Hailo-10H node, the 1200 MiB CPU build fits
    nowhere, and the message says which build needs what."""
    p = place(floor(memory=1024), [chat(replicas=4)])
    assert on(p) == {"pi-10h": "hailo10h"}
    (u,) = p.unplaced
    assert u.reason is Reason.INSUFFICIENT_CAPACITY
    assert "placed 1 of 4" in u.message and "(1200 MiB on cpu, " in u.message
    assert "3 short of memory" in u.message


def test_declared_memory_counts_against_what_else_the_node_holds() -> None:
    """A 2048 MiB CPU node takes one 1200 MiB chat model, not two; a 256 MiB tensor model (no
    declared memory: the model's figure) still fits beside it."""
    node = [Node("pi-cpu", CPU, 2048, 0)]
    second = Model("chat-2", (LLM_CPU,), 1, 256, task="generate")
    small = Model("intent", (Artifact(CPU, "onnx", "file:///i.onnx", "d" * 64),), 1, 256)
    p = place(node, [chat(LLM_CPU), second, small])
    placed = sorted(r.model for r in p.replicas)
    assert placed == ["chat", "intent"]  # chat-2 comes second by name, no room left
    (u,) = p.unplaced
    assert u.model == "chat-2" and u.reason is Reason.INSUFFICIENT_CAPACITY


def test_a_kept_replica_whose_build_grew_past_the_node_moves() -> None:
    small = Artifact(CPU, "onnx", "file:///chat.tar.gz", "b" * 64, memory_mib=800)
    nodes = [Node("pi-a", CPU, 1024, 0), Node("pi-b", CPU, 4096, 0)]
    first = place(nodes, [chat(small)])
    assert on(first) == {"pi-a": CPU}  # the less loaded, then by name
    big = place(nodes, [chat(LLM_CPU)], first)
    assert on(big) == {"pi-b": CPU}
