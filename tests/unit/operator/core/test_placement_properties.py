"""Property-based tests of placement: invariants that must hold for any pool and any history."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import replace

from hatswarm_operator.core.placement import CPU, Artifact, Model, Node, Placement, place
from hypothesis import given, settings
from hypothesis import strategies as st

ACCELS = ("hailo8l", "hailo8", CPU)
NODE_NAMES = tuple(f"n{i}" for i in range(9))
MODEL_NAMES = tuple(f"m{i}" for i in range(6))
SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def nodes_st(draw: st.DrawFn, roomy: bool = False) -> list[Node]:
    """A small pool; ``roomy`` pools have room everywhere and every node on a line."""
    names = draw(st.lists(st.sampled_from(NODE_NAMES), min_size=1, max_size=8, unique=True))
    out = []
    for name in names:
        accel = draw(st.sampled_from(ACCELS))
        labels = {}
        if roomy or draw(st.booleans()) or draw(st.booleans()):
            labels["line"] = draw(st.sampled_from("abc"))
        labels["zone"] = draw(st.sampled_from("xy"))
        out.append(
            Node(
                name=name,
                accelerator=accel,
                memory_mib=draw(st.sampled_from([2048] if roomy else [0, 512, 1024, 2048])),
                npu_contexts=0 if accel == CPU else draw(st.integers(int(roomy) * 3, 3)),
                labels=labels,
                schedulable=draw(st.integers(0, 4)) > 0,
            )
        )
    return out


@st.composite
def models_st(draw: st.DrawFn, names: tuple[str, ...] = MODEL_NAMES) -> list[Model]:
    chosen = draw(st.lists(st.sampled_from(names), max_size=5, unique=True))
    out = []
    for name in chosen:
        kinds = draw(st.lists(st.sampled_from(ACCELS), max_size=3, unique=True))
        arts = tuple(
            Artifact(k, "onnx" if k == CPU else "hef", fps=draw(st.sampled_from([None, 50.0, 300])))
            for k in kinds
        )
        out.append(
            Model(
                name=name,
                artifacts=arts,
                replicas=draw(st.integers(0, 4)),
                memory_mib=draw(st.sampled_from([0, 256, 512, 1024])),
                npu_contexts=draw(st.integers(0, 2)),
                node_selector=draw(st.sampled_from([{}, {}, {"zone": "x"}, {"zone": "q"}])),
                spread_key=draw(st.sampled_from([None, "line"])),
                fps_by_node=draw(
                    st.dictionaries(st.sampled_from(NODE_NAMES), st.sampled_from([20.0, 900.0]))
                ),
            )
        )
    return out


current_st = st.dictionaries(
    st.sampled_from((*MODEL_NAMES, "gone")),
    st.lists(st.sampled_from((*NODE_NAMES, "lost")), max_size=4),
    max_size=6,
)


def pairs(p: Placement) -> set[tuple[str, str]]:
    return {(r.model, r.node) for r in p.replicas}


def check_invariants(nodes: list[Node], models: list[Model], p: Placement) -> None:
    node_by = {n.name: n for n in nodes}
    model_by = {m.name: m for m in models}
    mem: Counter[str] = Counter()
    ctx: Counter[str] = Counter()
    assert len(pairs(p)) == len(p.replicas), "two replicas of a model on one node"
    for r in p.replicas:
        n, m = node_by[r.node], model_by[r.model]
        arts = {a.accelerator: a for a in m.artifacts}
        # The NPU artifact for this node if there is one, else the CPU one, never another.
        assert r.artifact == (arts.get(n.accelerator) or arts[CPU])
        assert all(n.labels.get(k) == v for k, v in m.node_selector.items())
        mem[r.node] += m.memory_mib
        ctx[r.node] += 0 if r.artifact.accelerator == CPU else m.npu_contexts
        expected = m.fps_by_node.get(n.name, r.artifact.fps)
        assert expected is None or r.weight == expected
    for name, used in mem.items():
        assert used <= node_by[name].memory_mib, f"memory over capacity on {name}"
    for name, used in ctx.items():
        assert used <= node_by[name].npu_contexts, f"NPU contexts over capacity on {name}"
    placed = Counter(r.model for r in p.replicas)
    short = {m.name for m in models if placed[m.name] < m.replicas}
    assert all(placed[m.name] <= m.replicas for m in models)
    assert {u.model for u in p.unplaced} == short, "every short model explained, only those"
    assert all(u.message and u.placed == placed[u.model] for u in p.unplaced)


@SETTINGS
@given(nodes_st(), models_st(), current_st)
def test_invariants_hold_for_any_history(
    nodes: list[Node], models: list[Model], current: dict[str, list[str]]
) -> None:
    check_invariants(nodes, models, place(nodes, models, current))


@SETTINGS
@given(nodes_st(), models_st(), current_st, st.randoms(use_true_random=False))
def test_deterministic_under_permutation(
    nodes: list[Node], models: list[Model], current: dict[str, list[str]], rnd: random.Random
) -> None:
    expected = place(nodes, models, current)

    def shuffled_labels(n: Node) -> Node:
        items = list(n.labels.items())
        rnd.shuffle(items)
        return replace(n, labels=dict(items))

    nodes2 = [shuffled_labels(n) for n in rnd.sample(nodes, len(nodes))]
    models2 = [
        replace(m, artifacts=tuple(rnd.sample(m.artifacts, len(m.artifacts)))) for m in models
    ]
    models2 = rnd.sample(models2, len(models2))
    current2 = {
        k: rnd.sample(v, len(v)) for k, v in rnd.sample(list(current.items()), len(current))
    }
    assert place(nodes2, models2, current2) == expected


@SETTINGS
@given(nodes_st(), models_st(), current_st)
def test_replacing_with_its_own_result_changes_nothing(
    nodes: list[Node], models: list[Model], current: dict[str, list[str]]
) -> None:
    first = place(nodes, models, current)
    assert place(nodes, models, first) == first


@SETTINGS
@given(nodes_st(), models_st(), current_st, st.sampled_from(ACCELS), st.booleans())
def test_adding_a_node_moves_nothing_already_placed(
    nodes: list[Node],
    models: list[Model],
    current: dict[str, list[str]],
    accel: str,
    roomy: bool,
) -> None:
    old = place(nodes, models, current)
    extra = Node("zz", accel, 4096 if roomy else 0, 4 if roomy else 0, {"line": "a", "zone": "x"})
    new = place([*nodes, extra], models, old)
    assert pairs(old) <= pairs(new)
    # Only replicas that were missing may appear, and only on the new node (capacity elsewhere
    # is as full as before).
    assert all(node == "zz" for _, node in pairs(new) - pairs(old))


@SETTINGS
@given(nodes_st(), models_st(), current_st, models_st(names=("zz-new",)))
def test_adding_an_unrelated_model_moves_nothing_already_placed(
    nodes: list[Node], models: list[Model], current: dict[str, list[str]], extra: list[Model]
) -> None:
    old = place(nodes, models, current)
    new = place(nodes, [*models, *extra], old)
    assert pairs(old) <= pairs(new)
    assert all(model == "zz-new" for model, _ in pairs(new) - pairs(old))


@SETTINGS
@given(nodes_st(), models_st(), current_st, st.data())
def test_losing_a_node_moves_only_its_replicas(
    nodes: list[Node], models: list[Model], current: dict[str, list[str]], data: st.DataObject
) -> None:
    old = place(nodes, models, current)
    lost = data.draw(st.sampled_from([n.name for n in nodes]))
    new = place([n for n in nodes if n.name != lost], models, old)
    assert all(node == lost for _, node in pairs(old) - pairs(new))
    lost_per_model = Counter(model for model, node in pairs(old) if node == lost)
    added_per_model = Counter(model for model, _ in pairs(new) - pairs(old))
    for model, added in added_per_model.items():
        assert added <= lost_per_model[model], f"{model} gained more than it lost"


def assert_spread_where_possible(nodes: list[Node], models: list[Model], p: Placement) -> None:
    """A domain may trail another by 2+ replicas only if it has no node that could take one."""
    node_by = {n.name: n for n in nodes}
    free_mem = {n.name: n.memory_mib for n in nodes}
    free_ctx = {n.name: n.npu_contexts for n in nodes}
    model_by = {m.name: m for m in models}
    for r in p.replicas:
        m = model_by[r.model]
        free_mem[r.node] -= m.memory_mib
        free_ctx[r.node] -= 0 if r.artifact.accelerator == CPU else m.npu_contexts
    for m in models:
        if m.spread_key is None:
            continue
        arts = {a.accelerator: a for a in m.artifacts}
        on = {r.node for r in p.replicas if r.model == m.name}
        counts: Counter[str] = Counter(node_by[n].labels.get(m.spread_key, "") for n in on)
        takers: dict[str, list[str]] = defaultdict(list)  # domain -> nodes that could take one
        for n in nodes:
            art = arts.get(n.accelerator) or arts.get(CPU)
            if art is None or not n.schedulable or n.name in on:
                continue
            if any(n.labels.get(k) != v for k, v in m.node_selector.items()):
                continue
            ctx = 0 if art.accelerator == CPU else m.npu_contexts
            if free_mem[n.name] >= m.memory_mib and free_ctx[n.name] >= ctx:
                takers[n.labels.get(m.spread_key, "")].append(n.name)
        for domain, nodes_with_room in takers.items():
            for other, count in counts.items():
                assert count <= counts[domain] + 1, (
                    f"{m.name}: {other} has {count} but {domain} has {counts[domain]} "
                    f"and room on {nodes_with_room}"
                )


@SETTINGS
@given(nodes_st(), models_st())
def test_spread_skew_exceeds_one_only_where_a_domain_is_out_of_room(
    nodes: list[Node], models: list[Model]
) -> None:
    assert_spread_where_possible(nodes, models, place(nodes, models))


@SETTINGS
@given(nodes_st(roomy=True), st.integers(2, 6), st.sampled_from(ACCELS[:2]), st.data())
def test_spread_in_a_roomy_pool_keeps_skew_at_most_one(
    nodes: list[Node], replicas: int, accel: str, data: st.DataObject
) -> None:
    # Per-node measurements pull replicas towards some nodes; spread must still win.
    fps = data.draw(st.dictionaries(st.sampled_from(NODE_NAMES), st.sampled_from([20.0, 900.0])))
    arts = (Artifact(accel, "hef"), Artifact(CPU, "onnx"))
    model = Model("m", arts, replicas, 256, spread_key="line", fps_by_node=fps)
    p = place(nodes, [model])
    assert len(p.replicas) == min(replicas, sum(n.schedulable for n in nodes))
    assert_spread_where_possible(nodes, [model], p)
