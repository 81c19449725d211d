"""One request of 8M empty strings (32 MB on the wire, half a gigabyte once decoded into Python
objects) is refused by the BYTES limit before anything is decoded: the agent answers it fast,
keeps answering health checks, and its memory goes back to where it was.

Before: 15 s, health checks waiting 10.9 s, RSS from 97 MB to 1.7 GB and staying there.
Health latencies and the served-under-the-limit figures are in the chaos bench.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.scenarios import huge_bytes
from tests.onnxmodels import build_strings

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_an_8m_element_bytes_request_is_refused_naming_the_limit_and_memory_returns(
    tmp_path: Path,
) -> None:
    result = huge_bytes(build_strings(tmp_path / "strings.onnx"), count=8 << 20)
    assert result.code == "INVALID_ARGUMENT"
    assert "limit of 262144 (--max-bytes-elements)" in result.detail
    assert result.seconds < 10  # generous: a loaded box; the bench has the figure
    assert result.health_checks > 0 and result.health_worst_ms < 2000
    assert result.rss_after_vs_before < 1.10, (result.rss_before, result.rss_after)


def test_a_large_bytes_request_under_the_limit_is_served(tmp_path: Path) -> None:
    result = huge_bytes(build_strings(tmp_path / "strings.onnx"), count=1 << 18, item=b"ab")
    assert result.code == "OK", result.detail
    assert result.health_checks > 0 and result.health_worst_ms < 2000
