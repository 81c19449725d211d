"""`kubectl explain` on hatswarm's CRDs, with the real kubectl against the emulator: every
field it is asked about has a description, down to list items and status."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.kubeemu import KubeApi

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[3] / "crds"


@pytest.fixture
def crds(kube_api: KubeApi) -> KubeApi:
    """The CRDs installed before kubectl first runs (its discovery cache then has them)."""
    for path in sorted(CRDS.glob("*.yaml")):
        kube_api.store.put(yaml.safe_load(path.read_text()))
    return kube_api


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("em.spec.version", "changing it starts a rollout"),
        ("em.spec.replicas.max", "unset, it follows desired and min"),
        ("em.spec.rollout.steps", "Traffic percentages the canary steps through"),
        ("em.spec.slo.p99LatencyMs", "Target p99 latency in ms"),
        ("em.status.conditions.lastTransitionTime", "When the status last changed"),
        ("em.metadata.name", "at most 63 characters"),
        ("inferencepools.hatswarm.io.spec.agent.port", "gRPC port of the agent"),
        ("ipool.spec.routing.hedgeAfterPercentile", "Send a second copy"),
        ("ipool.spec.auth.tlsSecretRef", "kubernetes.io/tls Secret"),
        ("ipool.status.nodes.lastSeen", "last answered a probe"),
    ],
)
def test_explain_describes_the_field(crds: KubeApi, field: str, says: str) -> None:
    out = crds.kubectl("explain", field, check=True).stdout
    assert says in " ".join(out.split()), out


def test_explain_lists_every_field_with_a_description(crds: KubeApi) -> None:
    """The field list of `spec.rollout` shows each field and its description."""
    out = crds.kubectl("explain", "em.spec.rollout", check=True).stdout
    text = " ".join(out.split())
    for name, says in (
        ("canaryWeight", "Percent of traffic the new version takes first"),
        ("analysisWindowSeconds", "Seconds each step is watched"),
        ("rollback", "When the canary is rolled back automatically"),
    ):
        assert name in text and says in text, out
    assert "<empty>" not in out
