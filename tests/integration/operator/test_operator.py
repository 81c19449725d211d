"""The real operator against the emulated API and real agents: place, fail over, delete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.integration.operator.harness import (
    CRDS,
    World,
    model_manifest,
    pool_manifest,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_pool_places_models_fails_over_and_unloads_on_delete(world: World, mlp: Path) -> None:
    world.add_nodes("pi-1", "pi-2", "pi-3")
    world.kube.apply(pool_manifest("floor"), model_manifest("mlp", mlp, replicas=2))
    op = world.start_operator()

    # The pool owns its agents and its entry point.
    ds = wait_for(lambda: world.get("DaemonSet", "hatswarm-agent-floor-cpu"), what="DaemonSet")
    svc = wait_for(lambda: world.get("Service", "floor"), what="Service")
    pool_uid = world.get("InferencePool", "floor")["metadata"]["uid"]  # type: ignore[index]
    for obj in (ds, svc):
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [
            ("InferencePool", "floor", pool_uid)
        ]

    # Placed, loaded and Ready, as kubectl shows it.
    wait_for(lambda: len(world.ready_on("mlp")) == 2, timeout=120, what="2 replicas ready")
    wait_for(lambda: world.status("EdgeModel", "mlp").get("phase") == "Ready", what="phase")
    table = world.kube.kubectl("get", "em", "mlp", check=True).stdout
    assert "2/2" in table and "Ready" in table, table
    wait_for(
        lambda: world.condition("InferencePool", "floor").get("status") == "True",
        what="pool Ready",
    )
    assert world.status("InferencePool", "floor")["nodesReady"] == 3
    wait_for(lambda: world.events("mlp", "Loaded"), what="Loaded Events on the EdgeModel")

    # Kill one agent holding a replica: the replica moves, the pool stays Ready.
    first = world.ready_on("mlp")
    victim = first[0]
    world.agents[victim].kill()
    wait_for(
        lambda: (on := world.ready_on("mlp")) and len(on) == 2 and victim not in on,
        timeout=120,
        what="replica moved off the killed node",
    )
    wait_for(lambda: world.status("EdgeModel", "mlp").get("ready") == "2/2", what="2/2 again")
    assert world.condition("InferencePool", "floor").get("status") == "True"
    wait_for(lambda: world.events("floor", "NodeLost"), what="a NodeLost Event on the pool")
    wait_for(
        lambda: re.search(r"^hatswarm_operator_failovers_total [1-9]", op.metrics(), re.M),
        what="failover metric",
    )

    # Delete the model: the finalizer unloads it from every agent before it goes away.
    world.kube.kubectl("delete", "em", "mlp", "--wait=false", check=True)
    wait_for(lambda: world.get("EdgeModel", "mlp") is None, timeout=90, what="model gone")
    assert world.ready_on("mlp") == []
    live = [n for n, a in world.agents.items() if a.proc.poll() is None]
    assert all(not world.node_status(n).models for n in live)


def test_invalid_model_is_a_condition_and_an_event(world: World, mlp: Path) -> None:
    """A spec the API server let through but the operator refuses (an older, looser CRD).

    Today's CRD would refuse this spec, so the test installs an EdgeModel CRD whose spec
    schema is permissive (as an out-of-date CRD would be); its status schema is today's.
    """
    world.add_node("pi-1")
    loose = yaml.safe_load((CRDS / "hatswarm.io_edgemodels.yaml").read_text())
    for v in loose["spec"]["versions"]:
        v["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    world.kube.apply(loose)
    bad = model_manifest("twice", mlp)
    bad["spec"]["artifacts"] *= 2  # one artifact per accelerator, says the operator
    world.kube.apply(bad)
    world.kube.apply(pool_manifest("floor"), model_manifest("good", mlp, replicas=1))
    world.start_operator()

    cond = wait_for(
        lambda: (
            (c := world.condition("EdgeModel", "twice")) and c.get("reason") == "InvalidSpec" and c
        ),
        what="InvalidSpec condition",
    )
    assert cond["status"] == "False"
    assert "at most one artifact per accelerator" in cond["message"]
    assert world.status("EdgeModel", "twice")["phase"] == "Failed"
    event = wait_for(lambda: world.events("twice", "InvalidSpec"), what="Warning event")[0]
    assert event["type"] == "Warning"
    assert "artifacts" in event["message"]
    # The rest of the pool is not held back by one bad model.
    wait_for(lambda: world.status("EdgeModel", "good").get("phase") == "Ready", timeout=120)
    assert world.ready_on("twice") == []

    # Fixing the spec clears the condition: the pool's loop takes the model over.
    world.kube.apply(model_manifest("twice", mlp, replicas=1))
    wait_for(
        lambda: world.condition("EdgeModel", "twice").get("reason") == "ReplicasReady",
        timeout=120,
        what="fixed model ready",
    )
