"""Fixtures: the Widget CRD, as a manifest and installed in the emulator."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.integration.kubeemu.widgets import WIDGET_CRD
from tests.kubeemu import KubeApi, ResourceType


@pytest.fixture
def widget_crd() -> dict[str, Any]:
    return copy.deepcopy(WIDGET_CRD)


@pytest.fixture
def widgets(kube_api: KubeApi, widget_crd: dict[str, Any]) -> ResourceType:
    """The Widget CRD installed directly in the store; returns its resource type."""
    kube_api.store.put(widget_crd)
    return kube_api.store.type_for("example.com/v1", "Widget")
