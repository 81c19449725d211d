"""Placement at pool scale: 1,000 nodes x 200 models must place in under 1 s on this machine.

Four scenarios, each the median of several runs of :func:`place`: a cold start (nothing
placed), a steady-state reconcile (the previous result as ``current``), a node loss, and a
contended pool (8x the replicas at twice the memory, so placement runs out of room). The
baseline, measured in the same run on the same input, is a naive placer that scans every node
for every replica (O(models x replicas x nodes), no spread, no stability): the ratio says what
the heaps and precomputed candidate lists buy. Inputs are seeded, so runs compare.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
from collections.abc import Callable

from hatswarm_operator.core.placement import CPU, DEFAULT_FPS, Artifact, Model, Node, diff, place

TARGET_SECONDS = 1.0
NODES = 1000
MODELS = 200
RUNS = 5


def build_pool(
    n_nodes: int = NODES, n_models: int = MODELS, seed: int = 7
) -> tuple[list[Node], list[Model]]:
    """A factory floor: 20 production lines, mostly Hailo-8L, some Hailo-8 and CPU-only Pis."""
    rng = random.Random(seed)
    nodes = []
    for i in range(n_nodes):
        accel = rng.choices(["hailo8l", "hailo8", CPU], weights=[6, 3, 1])[0]
        nodes.append(
            Node(
                name=f"pi-{i:04d}",
                accelerator=accel,
                memory_mib=rng.choice([4096, 8192]),
                npu_contexts=0 if accel == CPU else 4,
                labels={"line": f"line-{i % 20:02d}", "zone": f"hall-{i % 3}"},
                schedulable=rng.random() > 0.02,
            )
        )
    models = []
    for j in range(n_models):
        kinds = rng.sample(["hailo8l", "hailo8"], k=rng.randint(1, 2))
        arts = [Artifact(k, "hef", fps=DEFAULT_FPS[k] * rng.uniform(0.3, 3)) for k in kinds]
        if rng.random() < 0.5:
            arts.append(Artifact(CPU, "onnx", fps=rng.uniform(5, 40)))
        measured = {
            f"pi-{rng.randrange(n_nodes):04d}": rng.uniform(50, 900)
            for _ in range(rng.randint(0, 5))
        }
        models.append(
            Model(
                name=f"model-{j:03d}",
                artifacts=tuple(arts),
                replicas=rng.randint(1, 8),
                memory_mib=rng.choice([256, 512, 1024]),
                npu_contexts=1,
                node_selector={"zone": f"hall-{j % 3}"} if rng.random() < 0.3 else {},
                spread_key="line" if rng.random() < 0.8 else None,
                fps_by_node=measured,
            )
        )
    return nodes, models


def naive_place(nodes: list[Node], models: list[Model]) -> dict[str, list[str]]:
    """The obvious placer: for every replica, scan every node for the fastest that fits."""
    free = {n.name: [n.memory_mib, n.npu_contexts] for n in nodes}
    out: dict[str, list[str]] = {}
    for m in models:
        arts = {a.accelerator: a for a in m.artifacts}
        chosen: list[str] = []
        for _ in range(m.replicas):
            best: tuple[float, str, int] | None = None
            for n in nodes:
                art = arts.get(n.accelerator) or arts.get(CPU)
                if art is None or not n.schedulable or n.name in chosen:
                    continue
                if any(n.labels.get(k) != v for k, v in m.node_selector.items()):
                    continue
                ctx = 0 if art.accelerator == CPU else m.npu_contexts
                mem_free, ctx_free = free[n.name]
                if mem_free < m.memory_mib or ctx_free < ctx:
                    continue
                fps = m.fps_by_node.get(n.name, art.fps or 1.0)
                if best is None or (-fps, n.name) < (-best[0], best[1]):
                    best = (fps, n.name, ctx)
            if best is None:
                break
            chosen.append(best[1])
            free[best[1]][0] -= m.memory_mib
            free[best[1]][1] -= best[2]
        out[m.name] = chosen
    return out


def _median(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(quick: bool = False) -> dict[str, object]:
    """Measure the scenarios; JSON-able result for bench/run.py (``quick``: one run each)."""
    runs = 1 if quick else RUNS
    t0 = time.perf_counter()
    nodes, models = build_pool()
    build_s = time.perf_counter() - t0

    cold = place(nodes, models)
    lost = cold.replicas[0].node
    survivors = [n for n in nodes if n.name != lost]
    after_loss = place(survivors, models, cold)
    moved = sum(len(c.loads) for c in diff(cold, after_loss).values())

    cold_s = _median(lambda: place(nodes, models), runs)
    steady_s = _median(lambda: place(nodes, models, cold), runs)
    loss_s = _median(lambda: place(survivors, models, cold), runs)
    # Contention: 8x the replicas at twice the memory, so many models end up short.
    tight = [
        dataclasses.replace(m, replicas=m.replicas * 8, memory_mib=m.memory_mib * 2) for m in models
    ]
    tight_result = place(nodes, tight)
    tight_s = _median(lambda: place(nodes, tight), runs)
    naive_s = _median(lambda: naive_place(nodes, models), max(1, runs // 2))

    desired = sum(m.replicas for m in models)
    return {
        "name": "placement",
        "nodes": len(nodes),
        "models": len(models),
        "replicas_desired": desired,
        "replicas_placed": len(cold.replicas),
        "models_short": len(cold.unplaced),
        "runs": runs,
        "seconds": round(cold_s, 4),
        "cold_vs_target": round(cold_s / TARGET_SECONDS, 3),
        "cold_vs_baseline": round(cold_s / naive_s, 3),
        "target_seconds": TARGET_SECONDS,
        "steady_seconds": round(steady_s, 4),
        "steady_vs_target": round(steady_s / TARGET_SECONDS, 3),
        "node_loss_seconds": round(loss_s, 4),
        "node_loss_replicas_lost": sum(1 for r in cold.replicas if r.node == lost),
        "node_loss_replicas_loaded": moved,
        "contended_replicas_desired": sum(m.replicas for m in tight),
        "contended_replicas_placed": len(tight_result.replicas),
        "contended_seconds": round(tight_s, 4),
        "contended_vs_target": round(tight_s / TARGET_SECONDS, 3),
        "baseline": "naive scan placer (no spread, no stability), same input",
        "baseline_seconds": round(naive_s, 4),
        "build_inputs_seconds": round(build_s, 4),
        "cold_vs_build_inputs": round(cold_s / build_s, 3),
    }


if __name__ == "__main__":
    result = run()
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
