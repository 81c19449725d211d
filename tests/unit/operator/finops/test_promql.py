"""The Prometheus client's pure parts: exact counter increases, times, API errors (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hatswarm_operator.finops.promql import (
    Prometheus,
    PrometheusError,
    counter_increase,
    default_step,
    duration,
    parse_duration,
    parse_time,
)


def test_counter_increase_uses_the_last_sample_before_the_window() -> None:
    points = [(0.0, 5.0), (10.0, 7.0), (20.0, 12.0), (30.0, 20.0), (40.0, 25.0)]
    assert counter_increase(points, 10.0, 30.0) == 13.0  # 7 -> 20
    assert counter_increase(points, 15.0, 40.0) == 18.0  # 7 -> 25


def test_counter_increase_handles_resets_and_births() -> None:
    # restart between 20 and 30: the 3 after it are new
    assert counter_increase([(0, 10), (10, 15), (20, 18), (30, 3), (40, 6)], 5, 40) == 14
    # a series born inside the window counts from zero
    assert counter_increase([(12, 4.0), (13, 9.0)], 10, 20) == 9
    # NaN (stale) samples are skipped; nothing after the window counts
    assert counter_increase([(0, 1), (5, float("nan")), (10, 4), (30, 100)], 0, 20) == 3


def test_times() -> None:
    assert parse_time("now", now=1000.0) == 1000.0
    assert parse_time("now-15m", now=1000.0) == 100.0
    assert parse_time("1700000000.5") == 1700000000.5
    assert parse_time("2024-01-01T00:00:00Z") == 1704067200.0
    assert parse_time("2024-01-01T01:00:00+01:00") == 1704067200.0
    assert parse_time("2024-01-01 00:00:00") == 1704067200.0
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")
    assert parse_duration("90s") == 90
    assert parse_duration("2h") == 7200
    assert parse_duration("15") == 15
    with pytest.raises(ValueError, match="not a positive duration"):
        parse_duration("-3")
    assert duration(93.5) == "93500ms"
    assert default_step(86400) == 60
    assert default_step(120) == 2


def _client(handler: Any) -> Prometheus:
    return Prometheus("http://prom", client=httpx.Client(transport=httpx.MockTransport(handler)))


def test_query_parses_vectors_and_matrices() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        if q.endswith("]"):
            result = [{"metric": {"model": "a"}, "values": [[1, "2"], [3, "5"]]}]
            return httpx.Response(200, json={"status": "success",
                                             "data": {"resultType": "matrix", "result": result}})  # fmt: skip
        result = [{"metric": {"model": "a"}, "value": [3, "NaN"]}]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    with _client(handler) as prom:
        [s] = prom.query("x")
        assert s.labels == {"model": "a"}
        assert s.value != s.value  # NaN
        assert prom.increase("x", 2, 3, ("model",)) == {("a",): 3.0}


def test_api_errors_are_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"status": "error", "errorType": "bad_data", "error": "parse error"}
        return httpx.Response(400, content=json.dumps(body))

    with _client(handler) as prom, pytest.raises(PrometheusError, match="bad_data: parse error"):
        prom.query("x{")
