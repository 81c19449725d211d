"""The operator reads the cluster from watches: a quiet pool costs the API server no reads,
a watch that expires (410) or a restart relists once and converges, and nothing is loaded
twice. The agents are the simulated fleet (every LoadModel counted per node)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.operator.harness import World, wait_for
from tests.integration.operator.simworld import (
    SimFleet,
    add_nodes,
    agent_pod,
    model,
    pool,
    sim_fleet,
)
from tests.kubeemu import Store

pytestmark = pytest.mark.integration

MODELS = ("vision", "speech", "ocr")
REPLICAS = 2 * len(MODELS)
OUR_LISTS = {  # what the operator's caches list (kopf lists the custom resources cluster-wide)
    "nodes": "/api/v1/nodes",
    "pods": "/api/v1/namespaces/default/pods",
    "edgemodels": "/apis/hatswarm.io/v1alpha1/namespaces/default/edgemodels",
}


@pytest.fixture
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(12) as f:
        yield f


def placed(fleet: SimFleet) -> dict[str, list[str]]:
    ready = fleet.ready_nodes(MODELS)
    return ready if sum(len(v) for v in ready.values()) >= REPLICAS else {}


def statuses_ready(world: World) -> bool:
    return all(world.status("EdgeModel", m).get("ready") == "2/2" for m in MODELS)


def lists_since(world: World, since: int) -> dict[str, int]:
    """List requests (GET without watch) on the caches' paths, from request number `since`."""
    out = dict.fromkeys(OUR_LISTS, 0)
    for r in list(world.kube.server.requests)[since:]:
        if r.method != "GET" or "watch=" in r.query:
            continue
        for name, path in OUR_LISTS.items():
            if r.path == path:
                out[name] += 1
    return out


def informers(world: World, op_index: int = -1) -> dict[str, Any]:
    loop: dict[str, Any] = world.operators[op_index].health()["loop"]
    return dict(loop["informers"])


def converge(world: World, fleet: SimFleet) -> None:
    add_nodes(world.store, fleet)
    world.kube.apply(pool(), *(model(m) for m in MODELS))
    world.start_operator()
    wait_for(lambda: placed(fleet), timeout=120, what=f"{REPLICAS} replicas ready")
    wait_for(lambda: statuses_ready(world), timeout=60, what="statuses 2/2")


def test_a_quiet_pool_reads_nothing_and_events_count_up(world: World, fleet: SimFleet) -> None:
    converge(world, fleet)
    time.sleep(2.0)  # the last status patches and Events go out
    world.kube.server.counts(reset=True)
    time.sleep(5.0)  # ten ticks at 0.5 s
    counts = world.kube.server.counts()
    reads = {k: n for k, n in counts.requests.items() if k[0] in ("list", "get")}
    writes = {k: n for k, n in counts.requests.items() if k[0] in ("create", "patch", "update")}
    assert reads == {}, f"a quiet pool read the API: {reads}"
    assert writes == {}, f"a quiet pool wrote to the API (status unchanged): {writes}"
    assert fleet.totals()["NodeStatus"] >= 12 * 8  # while it kept probing every agent

    # Twelve nodes joined: the first nine NodeJoined Events stand alone, the rest count up on
    # one combined Event, as Kubernetes' own recorder aggregates them.
    joined = world.events("floor", "NodeJoined")
    combined = [e for e in joined if e["message"].startswith("(combined from similar events)")]
    assert len(joined) == 10 and len(combined) == 1, [e["message"] for e in joined]
    assert combined[0]["count"] == 3
    assert sum(e["count"] for e in joined) == 12

    # Watches the server ends (its timeout, a dropped connection) resume where they were:
    # no list, and what changes next still arrives.
    before = informers(world)
    mark = len(world.kube.server.requests)
    world.kube.server.close_watches()
    world.kube.apply(model("extra"))
    wait_for(
        lambda: len(fleet.ready_nodes(["extra"]).get("extra", [])) == 2,
        timeout=60,
        what="a model created after the watches were resumed, placed",
    )

    def resumed() -> dict[str, Any] | None:
        now = informers(world)
        return now if all(now[k]["watches"] > before[k]["watches"] for k in now) else None

    after = wait_for(resumed, timeout=30, what="every cache watching again")
    assert all(after[k]["lists"] == before[k]["lists"] for k in after)
    assert lists_since(world, mark) == {"nodes": 0, "pods": 0, "edgemodels": 0}
    assert fleet.totals()["duplicate_loads"] == 0


def test_an_expired_watch_relists_once_and_converges(world: World, fleet: SimFleet) -> None:
    converge(world, fleet)
    before = informers(world)
    loads = fleet.totals()["loads"]
    holders = placed(fleet)
    victim = holders[MODELS[0]][0]
    held = [m for m, nodes in holders.items() if victim in nodes]
    mark = len(world.kube.server.requests)

    # A compaction while every watch is down, and meanwhile the victim's agent Pod is deleted
    # (no watcher sees that DELETED event): only the relist can tell the operator.
    pod_type = world.store.type_for("v1", "Pod")

    def delete_pod(store: Store) -> None:
        store.delete(pod_type, "default", agent_pod(victim))

    world.kube.server.expire_watches(while_down=delete_pod)
    wait_for(
        lambda: all(
            len([n for n in fleet.ready_nodes([m]).get(m, []) if n != victim]) >= 2 for m in held
        ),
        timeout=60,
        what=f"the replicas of {victim} (its Pod gone while the watch was down) ready elsewhere",
    )
    wait_for(lambda: statuses_ready(world), timeout=60, what="statuses 2/2")
    assert lists_since(world, mark) == {"nodes": 1, "pods": 1, "edgemodels": 1}

    def relisted() -> dict[str, Any] | None:  # the liveness endpoint caches its results
        now = informers(world)
        return now if now["nodes"]["lists"] > before["nodes"]["lists"] else None

    after = wait_for(relisted, timeout=30, what="the relists in the operator's probe")
    for name, stats in after.items():
        assert stats["expired"] == before[name]["expired"] + 1, (name, stats)
        assert stats["lists"] == before[name]["lists"] + 1, (name, stats)
    totals = fleet.totals()
    assert totals["duplicate_loads"] == 0
    assert totals["loads"] == loads + len(held)  # only the moved replicas were loaded


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_a_restarted_operator_reloads_nothing(world: World, fleet: SimFleet, how: str) -> None:
    converge(world, fleet)
    time.sleep(2.0)
    loads, unloads = fleet.totals()["loads"], fleet.totals().get("unloads", 0)
    first = world.operators[0]
    if how == "kill":
        first.proc.kill()
        first.proc.wait()
    else:
        first.stop()
    world.kube.server.counts(reset=True)
    mark = len(world.kube.server.requests)
    world.start_operator()
    statuses = fleet.totals()["NodeStatus"]
    wait_for(
        lambda: fleet.totals()["NodeStatus"] >= statuses + 12 * 6,
        timeout=60,
        what="the new operator probing every agent for a few rounds",
    )
    totals = fleet.totals()
    assert totals["duplicate_loads"] == 0
    assert totals["loads"] == loads and totals.get("unloads", 0) == unloads
    assert lists_since(world, mark) == {"nodes": 1, "pods": 1, "edgemodels": 1}
    status_patches = {
        k: n for k, n in world.kube.server.counts().requests.items() if k[1].endswith("/status")
    }
    assert status_patches == {}, "the statuses were already right: nothing to patch"
    assert statuses_ready(world)
