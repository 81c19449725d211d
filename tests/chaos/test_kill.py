"""Two holders of a model SIGKILLed one after the other under closed-loop load (8 clients),
the second the moment the first one's replacement turned Ready: nothing is lost.

Before retries re-read the routing table, the requests in flight at the second holder were
retried only among the replicas of the table they arrived with (the dead first holder and
the second): 2-5 of 600 were lost although the replacement was serving.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.scenarios import two_holders_killed

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


async def test_two_holders_killed_in_a_row_lose_nothing(tmp_path: Path) -> None:
    result = await two_holders_killed(tmp_path)
    assert len(result.killed) == 2
    assert result.summary.sent >= 600
    assert result.lost == 0, result.summary.errors()
    assert "entry" not in result.summary.nodes  # every answer came through the pool
