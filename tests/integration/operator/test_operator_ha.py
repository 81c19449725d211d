"""Two operator replicas peering as the chart runs them (`--peering-name`, `--priority auto`):
one acts, the other stands by; killing the active one hands over within the peering lifetime,
and the new one reloads and unloads nothing. The agents are the simulated fleet."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.operator.harness import Operator, World, wait_for
from tests.integration.operator.simworld import SimFleet, add_nodes, model, pool, sim_fleet

pytestmark = pytest.mark.integration

MODELS = ("vision", "speech")
NODES = 8
LIFETIME_S = 10
PEERING_CRD = {  # kopf's, as charts/hatswarm/templates/kopf-peering.yaml installs it
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
    "spec": {
        "scope": "Cluster",
        "group": "kopf.dev",
        "names": {
            "kind": "ClusterKopfPeering",
            "plural": "clusterkopfpeerings",
            "singular": "clusterkopfpeering",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                },
            }
        ],
    },
}
PEERED = ("--peering-name", "hatswarm", "--priority", "auto")


@pytest.fixture
def fleet() -> Iterator[SimFleet]:
    with sim_fleet(NODES) as f:
        yield f


def acting(op: Operator) -> bool:
    """Does this replica run the pool's loop (its liveness probe lists the pool)?"""
    if op.proc.poll() is not None:
        return False
    try:
        return bool(op.health().get("pools"))
    except OSError:
        return False


def probes_per_s(fleet: SimFleet, seconds: float) -> float:
    start = fleet.totals()["NodeStatus"]
    time.sleep(seconds)
    return (fleet.totals()["NodeStatus"] - start) / seconds


def test_one_replica_acts_and_a_killed_one_hands_over(world: World, fleet: SimFleet) -> None:
    world.store.put(PEERING_CRD)
    world.store.put(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "hatswarm"},
        }
    )
    add_nodes(world.store, fleet)
    world.kube.apply(pool(), *(model(m) for m in MODELS))
    flags = (*PEERED, "--peering-lifetime", str(LIFETIME_S))
    first = world.start_operator(*flags, standalone=False)
    wait_for(
        lambda: sum(len(v) for v in fleet.ready_nodes(MODELS).values()) >= 2 * len(MODELS),
        timeout=120,
        what="the first replica placing every model",
    )
    second = world.start_operator(*flags, standalone=False)
    ops = (first, second)

    # One acts: exactly one replica runs the loop (whichever drew the higher priority) and
    # the agents are probed at one operator's rate (8 nodes every 0.5 s), not two.
    def the_one() -> Operator | None:
        running = [op for op in ops if acting(op)]
        return running[0] if len(running) == 1 else None

    def peers() -> int:
        found = world.store.find("ClusterKopfPeering")
        return len((found[0].get("status") or {}) if found else {})

    # Both replicas in the peering object; then a lower-priority newcomer stays paused, a
    # higher one pauses the first: either way one runs. (The liveness probe's answers are
    # cached a few seconds: ask until two answers in a row agree.)
    wait_for(lambda: peers() == 2, timeout=60, what="both replicas in the peering object")
    previous: list[Operator | None] = [None]

    def settled() -> Operator | None:
        now = the_one()
        agreed = now is not None and now is previous[0]
        previous[0] = now
        return now if agreed else None

    active = wait_for(settled, timeout=90, interval=3.0, what="one replica acting, one paused")
    standby = second if active is first else first
    rate = probes_per_s(fleet, 4.0)
    assert rate < 1.5 * NODES / 0.5, f"{rate:.0f} probes/s: more than one replica probes"
    assert not acting(standby)
    loads = fleet.totals()["loads"]

    # Kill the active one: its peering record expires, the standby resumes and acts.
    probes = fleet.totals()["NodeStatus"]
    killed = time.monotonic()
    active.proc.kill()
    active.proc.wait()
    wait_for(
        lambda: fleet.totals()["NodeStatus"] > probes + NODES,
        timeout=LIFETIME_S + 30,
        what="the standby probing the agents",
    )
    handover_s = time.monotonic() - killed
    assert handover_s <= LIFETIME_S + 10, f"handover took {handover_s:.1f}s"
    print(
        f"handover after SIGKILL of the active replica: {handover_s:.1f}s (lifetime {LIFETIME_S}s)"
    )
    wait_for(lambda: acting(standby), timeout=30, what="the standby running the pool")

    # The new active one acts: a node dies, its replicas move.
    holders = fleet.ready_nodes(MODELS)
    victim = holders[MODELS[0]][0]
    held = [m for m, nodes in holders.items() if victim in nodes]
    fleet.kill(victim)
    wait_for(
        lambda: all(
            len([n for n in fleet.ready_nodes([m]).get(m, []) if n != victim]) >= 2 for m in held
        ),
        timeout=60,
        what=f"the replicas of {victim} ready elsewhere, placed by the new active replica",
    )
    totals = fleet.totals()
    assert totals["duplicate_loads"] == 0
    assert totals.get("unloads", 0) == 0
    assert totals["loads"] == loads + len(held)
