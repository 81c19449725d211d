"""What `hatswarm up` shows: the latest statuses and Events of the local pool, mirrored to
`<state-dir>/status.json` (read by `hatswarm status`), and the table it prints."""

from __future__ import annotations

import json
import os
import time
from collections import deque
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
                    "time": t,
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


def render(snapshot: dict[str, Any], events: int = 6) -> str:
    """A `kubectl get ipool,em` style table, plus the latest Events."""
    lines = ["NAME                     READY  NODES  MODELS  COST/1K     CLOUD/1K    CLOUD-SPEND"]
    for name, p in sorted(snapshot["pools"].items()):
        cost = p.get("cost", {})
        per1k, cloud = cost.get("per1kUsd"), cost.get("cloudPer1kUsd")
        spend = cost.get("cloudFallbackSpendUsd")
        lines.append(
            f"inferencepool/{name:<10} {p.get('nodesReady', 0):<6} {p.get('nodesTotal', 0):<6} "
            f"{p.get('models', 0):<7} {per1k if per1k is not None else '-':<11} "
            f"{cloud if cloud is not None else '-':<11} {f'${spend}' if spend else '-'}"
        )
        for n in p.get("nodes", []):
            mark = "Ready" if n.get("ready") else f"NotReady ({n.get('reason', '')})"
            temp = n.get("temperatureC")
            lines.append(
                f"  node/{n['name']:<8} {n.get('accelerator', ''):<8} {mark:<28} "
                f"{','.join(n.get('models', [])) or '-':<24} "
                f"{f'{temp:.0f}C' if temp is not None else ''}"
            )
    lines.append("")
    lines.append("NAME                     READY  VERSION  PHASE        RATE     P99-MS")
    for name, m in sorted(snapshot["models"].items()):
        lines.append(
            f"edgemodel/{name:<14} {m.get('ready', '0/0'):<6} {m.get('version') or '-':<8} "
            f"{m.get('phase', ''):<12} {m.get('requestRate') or 0:<8.1f} {m.get('p99LatencyMs') or '-'}"
        )
    if events and snapshot["events"]:
        lines.append("")
        lines.append("EVENTS")
        for e in snapshot["events"][-events:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(e["time"]))
            lines.append(
                f"  {stamp} {e['type']:<7} {e['reason']:<14} {e['object']}: {e['message']}"
            )
    return "\n".join(lines)
