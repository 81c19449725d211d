"""After a cloud outage the fallback serves again within the peers' reconnect back-off (at
most 2 s) instead of gRPC's default (growing toward 120 s; ~25 s seen after an outage), and the
agent's NodeStatus counts what the cloud answered and what failed (the operator prices it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.scenarios import cloud_recovery
from tests.onnxmodels import build_identity

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_the_cloud_fallback_recovers_quickly_after_an_outage(tmp_path: Path) -> None:
    result = cloud_recovery(build_identity(tmp_path / "ident.onnx"))
    assert result["failed_during_outage"] > 0
    assert result["recovered_s"] is not None
    assert result["recovered_s"] < 4.0, result  # back-off capped at 2 s, plus a busy box
    assert result["cloud_requests"]["ident"] >= 6
    assert result["cloud_failures"] >= result["failed_during_outage"]
