"""A small client for Prometheus' HTTP API (``/api/v1/query``, ``/api/v1/query_range``).

Used by ``hatswarm cost incident`` and ``hatswarm cost report``. Also parses the times those
commands accept, and computes a counter's exact increase from raw samples (no extrapolation,
resets handled), which PromQL's ``increase()`` does not give over short windows.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

DEFAULT_URL = os.environ.get("HATSWARM_PROMETHEUS", "http://127.0.0.1:9090")

RAW_WINDOW_LIMIT = 6 * 3600.0
"""Windows up to this long are computed from raw samples (exact)."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"^now(?:\s*-\s*(\d+(?:\.\d+)?)\s*([smhdw]))?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


class PrometheusError(RuntimeError):
    """Prometheus answered with an error, or could not be reached."""


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds from ``now``, ``now-15m``, a unix timestamp or an ISO 8601 / RFC 3339 time
    (naive times are UTC)."""
    value = text.strip()
    reference = time.time() if now is None else now
    match = _RELATIVE.match(value)
    if match:
        amount, unit = match.groups()
        return reference - (float(amount) * _UNITS[unit] if amount else 0.0)
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"not a time: {text!r} (use now, now-1h, unix seconds or 2025-01-31T12:00:00Z)"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_window(start: str, end: str) -> tuple[float, float]:
    """`--from`/`--to` of the cost commands, checked to be in order."""
    t1, t2 = parse_time(start), parse_time(end)
    if t2 <= t1:
        raise ValueError("--to must be after --from")
    return t1, t2


def parse_duration(text: str) -> float:
    """Seconds from ``30s``, ``5m``, ``1h`` or a plain number of seconds."""
    match = _DURATION.match(text.strip())
    if match:
        return float(match.group(1)) * _UNITS[match.group(2)]
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"not a positive duration: {text!r}")
    return value


def default_step(window: float) -> float:
    """One point a minute, but at least ~60 points for windows under an hour (1 s floor)."""
    return 60.0 if window >= 3600 else max(1.0, round(window / 60, 3))


def duration(seconds: float) -> str:
    """A PromQL range literal in whole milliseconds (``[93500ms]``)."""
    return f"{max(1, round(seconds * 1000))}ms"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Series:
    """One time series: its labels and (unix seconds, value) points in time order."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...] = field(default_factory=tuple)

    @property
    def value(self) -> float:
        """The last point's value (an instant vector has exactly one)."""
        return self.points[-1][1] if self.points else math.nan


def counter_increase(points: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """How much a counter grew within (start, end], exactly, from raw samples.

    The baseline is the last sample at or before ``start``; a series born inside the window
    counts from zero (a new agent or model starts its counters there). A drop is a reset:
    the value after it is all new.
    """
    baseline: float | None = None
    total = 0.0
    previous: float | None = None
    for t, v in sorted(points):
        if not math.isfinite(v):
            continue
        if t <= start:
            baseline = v
            previous = v
            continue
        if t > end:
            break
        if previous is None:
            total += v if baseline is None else v - baseline
        elif v >= previous:
            total += v - previous
        else:
            total += v
        previous = v
    return total


class Prometheus:
    """``query`` and ``query_range`` against one server; errors become PrometheusError."""

    def __init__(
        self, url: str = DEFAULT_URL, *, timeout: float = 30.0, client: httpx.Client | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            response = self._client.get(f"{self.url}{path}", params=params)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError(
                f"{self.url}{path}: HTTP {response.status_code}, not JSON: {response.text[:200]}"
            ) from exc
        if body.get("status") != "success":
            raise PrometheusError(
                f"{params.get('query', path)}: {body.get('errorType', 'error')}: "
                f"{body.get('error', response.text[:200])}"
            )
        data: dict[str, Any] = body["data"]
        return data

    @staticmethod
    def _series(data: dict[str, Any]) -> list[Series]:
        kind = data.get("resultType")
        out: list[Series] = []
        if kind == "scalar":
            t, v = data["result"]
            return [Series({}, ((float(t), float(v)),))]
        for item in data.get("result", []):
            labels = dict(item.get("metric", {}))
            if "values" in item:
                points = tuple((float(t), float(v)) for t, v in item["values"])
            else:
                t, v = item["value"]
                points = ((float(t), float(v)),)
            out.append(Series(labels, points))
        return out

    def query(self, expr: str, at: float | None = None) -> list[Series]:
        """An instant query; a range-vector selector (``x[5m]``) returns raw samples."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._series(self._get("/api/v1/query", params))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        params = {
            "query": expr,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{max(step, 0.001):.3f}",
        }
        return self._series(self._get("/api/v1/query_range", params))

    def increase(
        self, selector: str, start: float, end: float, by: Sequence[str] = ()
    ) -> dict[tuple[str, ...], float]:
        """Increase of every counter series matching ``selector`` over (start, end], summed by
        the ``by`` labels. Exact from raw samples (with 5 minutes before ``start`` for the
        baseline) for windows up to :data:`RAW_WINDOW_LIMIT`; PromQL ``increase()`` beyond,
        so a month's report does not pull every sample."""
        out: dict[tuple[str, ...], float] = {}
        if end - start > RAW_WINDOW_LIMIT:
            grouping = f" by ({', '.join(by)})" if by else ""
            expr = f"sum{grouping} (increase({selector}[{duration(end - start)}]))"
            for s in self.query(expr, at=end):
                key = tuple(s.labels.get(label, "") for label in by)
                out[key] = out.get(key, 0.0) + s.value
            return out
        lookback = 300.0
        series = self.query(f"{selector}[{duration(end - start + lookback)}]", at=end)
        for s in series:
            key = tuple(s.labels.get(label, "") for label in by)
            out[key] = out.get(key, 0.0) + counter_increase(s.points, start, end)
        return out
