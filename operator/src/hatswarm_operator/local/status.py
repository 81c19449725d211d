"""What `hatswarm up` shows: the latest statuses and Events of the local pool, mirrored to
`<state-dir>/status.json` (read by `hatswarm status`), and the table it prints."""

from __future__ import annotations

import json
import os
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus
from hatswarm_operator.core.plan import ResourceEvent


class LocalSink:
    """Keeps the latest statuses and Events, and mirrors them to `status.json`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.models: dict[str, EdgeModelStatus] = {}
        self.pools: dict[str, InferencePoolStatus] = {}
        self.events: deque[tuple[float, ResourceEvent]] = deque(maxlen=200)
        self.pids: dict[str, int] = {}

    async def model_status(self, namespace: str, name: str, status: EdgeModelStatus) -> None:
        self.models[name] = status
        self._write()

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None:
        self.pools[name] = status
        self._write()

    async def event(self, namespace: str, event: ResourceEvent) -> None:
        self.events.append((time.time(), event))
        self._write()

    def snapshot(self) -> dict[str, Any]:
        return {
            "pools": {k: v.wire() for k, v in self.pools.items()},
            "models": {k: v.wire() for k, v in self.models.items()},
            "events": [
                {
                    "time": iso_time(t),
                    "object": f"{e.kind}/{e.name}",
                    "type": e.type,
                    "reason": e.reason,
                    "message": e.message,
                }
                for t, e in self.events
            ],
            "pids": self.pids,
        }

    def _write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(tmp, self.path)


def iso_time(unix: float) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _figure(value: object, fmt: str = "") -> str:
    """A measured figure, blank when it was not measured (None), never a made-up zero."""
    return "" if value is None else format(value, fmt)


def _memory(node: dict[str, Any]) -> str:
    """'1564/7204Mi': what the replicas placed on a node take of its budget ('' unknown)."""
    budget = node.get("memoryMiB")
    return "" if budget is None else f"{node.get('memoryUsedMiB') or 0}/{budget}Mi"


def render(snapshot: dict[str, Any], events: int = 6) -> str:
    """A `kubectl get inferencepools.hatswarm.io,edgemodels.hatswarm.io` style table (kinds
    qualified by group, as `kubectl get all` prints them), plus the latest Events."""
    lines = [
        "NAME                                 READY  NODES  MODELS  COST/1K     CLOUD/1K    "
        "CLOUD-SPEND"
    ]
    for name, p in sorted(snapshot["pools"].items()):
        cost = p.get("cost", {})
        per1k, cloud = cost.get("per1kUsd"), cost.get("cloudPer1kUsd")
        spend = cost.get("cloudFallbackSpendUsd")
        lines.append(
            f"inferencepool.hatswarm.io/{name:<10} {p.get('nodesReady', 0):<6} "
            f"{p.get('nodesTotal', 0):<6} "
            f"{p.get('models', 0):<7} {_figure(per1k):<11} {_figure(cloud):<11} "
            f"{f'${spend}' if spend else ''}"
        )
        for n in p.get("nodes", []):
            mark = "Ready" if n.get("ready") else f"NotReady ({n.get('reason', '')})"
            temp = n.get("temperatureC")
            lines.append(
                f"  node/{n['name']:<8} {n.get('accelerator', ''):<8} {mark:<28} "
                f"{','.join(n.get('models', [])) or '-':<24} {_memory(n):<14} "
                f"{f'{temp:.0f}C' if temp is not None else ''}"
            )
    lines.append("")
    lines.append(
        "NAME                                 READY  VERSION  PHASE        RATE     P99-MS"
    )
    for name, m in sorted(snapshot["models"].items()):
        lines.append(
            f"edgemodel.hatswarm.io/{name:<14} {m.get('ready', '0/0'):<6} {m.get('version') or '-':<8} "
            f"{m.get('phase', ''):<12} {_figure(m.get('requestRate'), '.1f'):<8} "
            f"{_figure(m.get('p99LatencyMs'), '.1f')}"
        )
    if events and snapshot["events"]:
        lines.append("")
        lines.append("EVENTS")
        for e in snapshot["events"][-events:]:
            stamp = e["time"]
            lines.append(
                f"  {stamp} {e['type']:<7} {e['reason']:<14} {e['object']}: {e['message']}"
            )
    return "\n".join(lines)
