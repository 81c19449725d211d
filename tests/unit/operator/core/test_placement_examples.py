"""Example-based tests of placement: each pins one rule with a pool small enough to reason about."""

from __future__ import annotations

from collections import Counter

import pytest
from hatswarm_operator.core.placement import (
    CPU,
    Artifact,
    Model,
    Node,
    Placement,
    Reason,
    Replica,
    diff,
    place,
)

HEF8 = Artifact("hailo8", "hef")
HEF8L = Artifact("hailo8l", "hef")
ONNX = Artifact(CPU, "onnx")


def pi(
    name: str,
    accel: str = "hailo8l",
    memory: int = 4096,
    contexts: int = 4,
    line: str | None = None,
    schedulable: bool = True,
    **labels: str,
) -> Node:
    if line is not None:
        labels["line"] = line
    return Node(name, accel, memory, contexts, labels, schedulable)


def model(name: str = "det", *artifacts: Artifact, replicas: int = 1, memory: int = 512) -> Model:
    return Model(name, artifacts or (HEF8L,), replicas, memory)


def nodes_of(p: Placement, name: str) -> list[str]:
    return [r.node for r in p.replicas if r.model == name]


# --- accelerators and artifacts -------------------------------------------------------------


def test_hef_for_hailo8_never_goes_to_hailo8l_and_says_why() -> None:
    pool = [pi("pi-a"), pi("pi-b"), pi("pi-c")]
    p = place(pool, [model("yolo", HEF8, replicas=2)])
    assert p.replicas == ()
    (u,) = p.unplaced
    assert u.reason is Reason.NO_ACCELERATOR_ARTIFACT
    assert u.message == (
        "no node with an accelerator the model has an artifact for "
        "(has: hef/hailo8; pool has: hailo8l x3)"
    )
    assert (u.placed, u.desired) == (0, 2)


def test_model_without_artifacts_is_explained() -> None:
    p = place([pi("pi-a")], [Model("empty", (), 1, 128)])
    assert p.unplaced[0].reason is Reason.NO_ACCELERATOR_ARTIFACT
    assert "has: none" in p.unplaced[0].message


def test_cpu_artifact_runs_on_any_node_and_takes_no_npu_context() -> None:
    pool = [pi("pi-a", contexts=0), pi("pi-b", CPU, contexts=0)]
    p = place(pool, [model("clf", HEF8, ONNX, replicas=2)])
    assert {r.node: r.artifact for r in p.replicas} == {"pi-a": ONNX, "pi-b": ONNX}
    assert p.unplaced == ()


def test_a_node_with_the_npu_artifact_runs_it_rather_than_fall_back_to_cpu() -> None:
    # A full NPU does not turn a Hailo-8 into a CPU host for this model: the choice of
    # artifact per node stays fixed, so a replica never flips runtime with its neighbours' load.
    p = place([pi("pi-a", "hailo8", contexts=0)], [model("clf", HEF8, ONNX)])
    assert p.replicas == ()
    assert p.unplaced[0].reason is Reason.INSUFFICIENT_CAPACITY
    assert "1 short of NPU contexts" in p.unplaced[0].message


def test_npu_artifact_preferred_where_a_node_has_both() -> None:
    p = place([pi("pi-a"), pi("pi-b", CPU, contexts=0)], [model("det", HEF8L, ONNX, replicas=2)])
    assert {r.node: r.artifact for r in p.replicas} == {"pi-a": HEF8L, "pi-b": ONNX}


# --- throughput, load, names ----------------------------------------------------------------


def test_measured_throughput_beats_tops() -> None:
    # The Hailo-8 has twice the TOPS, but this model was measured faster on the 8L build.
    fast_8l = Artifact("hailo8l", "hef", fps=300.0)
    slow_8 = Artifact("hailo8", "hef", fps=120.0)
    p = place([pi("pi-a", "hailo8"), pi("pi-b", "hailo8l")], [model("seg", slow_8, fast_8l)])
    assert nodes_of(p, "seg") == ["pi-b"]
    assert p.replicas[0].weight == 300.0


def test_per_node_measurement_beats_the_artifact_figure() -> None:
    m = Model("det", (Artifact("hailo8l", "hef", fps=100.0),), 1, 512, fps_by_node={"pi-b": 150})
    p = place([pi("pi-a"), pi("pi-b")], [m])
    assert [(r.node, r.weight) for r in p.replicas] == [("pi-b", 150)]


def test_least_loaded_then_name_break_ties() -> None:
    pool = [pi("pi-a"), pi("pi-b"), pi("pi-c")]
    first = place(pool, [model("one")])
    assert nodes_of(first, "one") == ["pi-a"]  # all equal: the first by name
    second = place(pool, [model("one"), model("two")], first)
    assert nodes_of(second, "two") == ["pi-b"]  # pi-a is loaded now


def test_routing_weight_is_the_nodes_throughput_for_the_model() -> None:
    arts = (Artifact("hailo8", "hef", fps=491.0), Artifact("hailo8l", "hef", fps=110.0))
    p = place([pi("pi-a", "hailo8"), pi("pi-b")], [model("yolov8s", *arts, replicas=2)])
    assert {r.node: r.weight for r in p.replicas} == {"pi-a": 491.0, "pi-b": 110.0}


# --- spread ---------------------------------------------------------------------------------


def spread_model(replicas: int, memory: int = 512) -> Model:
    return Model("det", (HEF8L, Artifact("hailo8", "hef")), replicas, memory, spread_key="line")


def lines_pool() -> list[Node]:
    # Line a has the fastest nodes, so without spreading everything would land there.
    return [
        pi("a1", "hailo8", line="a"),
        pi("a2", "hailo8", line="a"),
        pi("b1", line="b"),
        pi("b2", line="b"),
        pi("c1", line="c"),
        pi("c2", line="c"),
    ]


def line_counts(p: Placement) -> Counter[str]:
    return Counter(r.node[0] for r in p.replicas)


def test_replicas_spread_across_lines_before_doubling_up() -> None:
    p = place(lines_pool(), [spread_model(3)])
    assert nodes_of(p, "det") == ["a1", "b1", "c1"]
    p4 = place(lines_pool(), [spread_model(4)])
    assert line_counts(p4) == Counter({"a": 2, "b": 1, "c": 1})  # the extra goes to the fastest


def test_spread_skips_a_line_without_room() -> None:
    pool = [
        n if n.labels["line"] != "c" else pi(n.name, memory=256, line="c") for n in lines_pool()
    ]
    p = place(pool, [spread_model(4)])
    assert line_counts(p) == Counter({"a": 2, "b": 2})
    assert p.unplaced == ()


def test_nodes_without_the_spread_label_form_one_domain() -> None:
    p = place([pi("x1"), pi("x2"), pi("y1", line="y")], [spread_model(2)])
    assert nodes_of(p, "det") == ["x1", "y1"]


# --- capacity -------------------------------------------------------------------------------


def test_capacity_counts_replicas_already_there_and_explains_the_shortfall() -> None:
    pool = [pi("pi-a", memory=1024), pi("pi-b", memory=1024)]
    old = place(pool, [model("big", memory=1024)])
    p = place(pool, [model("big", memory=1024), model("more", memory=768, replicas=2)], old)
    assert nodes_of(p, "big") == nodes_of(old, "big") == ["pi-a"]
    assert nodes_of(p, "more") == ["pi-b"]
    (u,) = p.unplaced
    assert (u.model, u.reason, u.placed, u.desired) == ("more", Reason.INSUFFICIENT_CAPACITY, 1, 2)
    assert "1 short of memory" in u.message


def test_npu_contexts_limit_npu_replicas_only() -> None:
    pool = [pi("pi-a", contexts=1)]
    p = place(pool, [model("m1"), model("m2"), model("m3", ONNX)])
    assert sorted(r.model for r in p.replicas) == ["m1", "m3"]
    assert [(u.model, u.reason) for u in p.unplaced] == [("m2", Reason.INSUFFICIENT_CAPACITY)]


def test_one_replica_per_node_at_most() -> None:
    p = place([pi("pi-a", memory=65536), pi("pi-b", memory=65536)], [model("det", replicas=3)])
    assert nodes_of(p, "det") == ["pi-a", "pi-b"]
    (u,) = p.unplaced
    assert u.reason is Reason.TOO_FEW_NODES
    assert u.message == (
        "placed 2 of 3: at most one replica per node and only 2 nodes can run it (hailo8l x2)"
    )


def test_models_take_turns_under_contention() -> None:
    pool = [pi("pi-a", memory=512), pi("pi-b", memory=512)]
    p = place(pool, [model("m1", replicas=2), model("m2", replicas=2)])
    assert Counter(r.model for r in p.replicas) == Counter({"m1": 1, "m2": 1})


# --- selectors and cordons ------------------------------------------------------------------


def test_selector_that_matches_nothing_is_explained() -> None:
    m = Model("det", (HEF8L,), 1, 512, node_selector={"line": "z"})
    p = place([pi("pi-a", line="a"), pi("pi-b", line="b")], [m])
    (u,) = p.unplaced
    assert u.reason is Reason.SELECTOR_MATCHES_NOTHING
    assert u.message == "node selector line=z matches none of the 2 nodes (line in {a,b})"


def test_selector_restricts_placement() -> None:
    m = Model("det", (HEF8L,), 3, 512, node_selector={"line": "b"})
    p = place([pi("pi-a", line="a"), pi("pi-b", line="b")], [m])
    assert nodes_of(p, "det") == ["pi-b"]
    assert p.unplaced[0].reason is Reason.TOO_FEW_NODES


def test_cordoned_nodes_take_nothing_new_but_keep_what_they_have() -> None:
    pool = [pi("pi-a"), pi("pi-b")]
    old = place(pool, [model("det")])
    cordoned = [pi("pi-a", schedulable=False), pi("pi-b", schedulable=False)]
    p = place(cordoned, [model("det"), model("new")], old)
    assert nodes_of(p, "det") == ["pi-a"]
    assert [(u.model, u.reason) for u in p.unplaced] == [("new", Reason.NO_SCHEDULABLE_NODE)]


# --- stability ------------------------------------------------------------------------------


def test_losing_a_node_moves_only_its_replicas() -> None:
    pool = lines_pool()
    models = [spread_model(3), model("clf", HEF8L, replicas=2), model("ocr", ONNX, replicas=4)]
    old = place(pool, models)
    lost = "b1"
    new = place([n for n in pool if n.name != lost], models, old)
    changes = diff(old, new)
    on_lost = sorted(r.model for r in old.replicas if r.node == lost)
    assert on_lost  # the scenario must actually lose something
    assert changes[lost].loads == ()
    assert sorted(r.model for r in changes[lost].unloads) == on_lost
    loaded = sorted(r.model for node, c in changes.items() if node != lost for r in c.loads)
    assert loaded == on_lost
    assert all(c.unloads == () for node, c in changes.items() if node != lost)


def test_adding_a_node_or_an_unrelated_model_moves_nothing() -> None:
    pool = lines_pool()
    models = [spread_model(3), model("clf", HEF8L, replicas=2)]
    old = place(pool, models)
    grown = place([*pool, pi("a0", "hailo8", memory=65536, line="a")], models, old)
    assert grown.replicas == old.replicas
    more = place(pool, [*models, model("new", HEF8L, ONNX, replicas=2)], old)
    changes = diff(old, more)
    assert all(c.unloads == () for c in changes.values())
    assert {r.model for c in changes.values() for r in c.loads} == {"new"}
    assert set(old.replicas) <= set(more.replicas)


def test_scale_down_trims_the_fullest_line_first() -> None:
    old = place(lines_pool(), [spread_model(5)])
    assert line_counts(old) == Counter({"a": 2, "b": 2, "c": 1})
    new = place(lines_pool(), [spread_model(3)], old)
    assert line_counts(new) == Counter({"a": 1, "b": 1, "c": 1})
    assert set(new.replicas) <= set(old.replicas)


def test_replica_whose_node_no_longer_matches_the_selector_moves() -> None:
    pool = [pi("pi-a", line="a"), pi("pi-b", line="b")]
    old = place(pool, [model("det")])
    assert nodes_of(old, "det") == ["pi-a"]
    m = Model("det", (HEF8L,), 1, 512, node_selector={"line": "b"})
    assert nodes_of(place(pool, [m], old), "det") == ["pi-b"]


def test_current_as_a_mapping_ignores_unknown_names() -> None:
    p = place([pi("pi-a"), pi("pi-b")], [model("det")], {"det": ["pi-b", "gone"], "old": ["pi-a"]})
    assert nodes_of(p, "det") == ["pi-b"]


# --- diff and input checks ------------------------------------------------------------------


def test_diff_reloads_on_a_new_version_but_not_on_a_new_weight() -> None:
    r = Replica("det", "pi-a", HEF8L, 100.0, version="1")
    assert diff([r], [Replica("det", "pi-a", HEF8L, 250.0, version="1")]) == {}
    v2 = Replica("det", "pi-a", HEF8L, 100.0, version="2")
    changes = diff([r], [v2])
    assert changes["pi-a"].unloads == (r,)
    assert changes["pi-a"].loads == (v2,)


@pytest.mark.parametrize(
    ("nodes", "models"),
    [
        ([pi("pi-a"), pi("pi-a")], []),
        ([pi("pi-a")], [model("det"), model("det")]),
        ([pi("pi-a")], [model("det", replicas=-1)]),
        ([pi("pi-a", memory=-1)], []),
    ],
)
def test_invalid_input_is_rejected(nodes: list[Node], models: list[Model]) -> None:
    with pytest.raises(ValueError, match=r"duplicate|negative"):
        place(nodes, models)
