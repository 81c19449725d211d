"""Fixtures: an emulated cluster with the hatswarm CRDs, real agents, the real operator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.operator.harness import World
from tests.kubeemu import KubeApi
from tests.onnxmodels import build_mlp


@pytest.fixture
def world(kube_api: KubeApi, tmp_path: Path) -> Iterator[World]:
    w = World(kube_api, tmp_path)
    w.install_crds()
    try:
        yield w
    finally:
        w.close()
        for n, op in enumerate(w.operators):
            print(f"--- operator {n} log (tail) ---\n{op.log()[-6000:]}")


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return build_mlp(tmp_path / "mlp.onnx", in_dim=8, hidden=16, out=4)
