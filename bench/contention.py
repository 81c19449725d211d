"""Who else used the CPU while a benchmark block ran: outside load told from our own.

A load average counts the benchmark's own clients and servers too, so it cannot say whether a
figure was disturbed. This meter reads /proc at the start and end of a block: the machine's
busy time (/proc/stat) minus the CPU time of the benchmark's own process tree (this process and
every descendant: servers, their workers) is what everything else used. Expressed in cores
(busy seconds per wall second), a block where others used more than `threshold_cores` is
flagged contended, with the heaviest outside processes named so a reader can see what it was.

    meter = CpuMeter()
    with meter.block() as block:
        ...  # measure
    block.result  # {"outside_cores": 0.03, "own_cores": 1.7, "contended": False, ...}
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Others may use this much of one core during a block before its figures count as contended:
# on a 2-core machine a job using a fifth of a core already moves p99.
THRESHOLD_CORES = 0.2


def _proc_stats() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, utime + stime in ticks, command name) for every live process."""
    out: dict[int, tuple[int, int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        # comm may hold spaces and parentheses: split after the last ')'.
        head, _, rest = raw.rpartition(")")
        comm = head.partition("(")[2]
        fields = rest.split()
        try:
            out[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), comm)
        except (IndexError, ValueError):
            continue
    return out


def _machine_busy_ticks() -> int:
    """Busy ticks of all CPUs since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return sum(values) - idle - guest


def _tree(stats: dict[int, tuple[int, int, str]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    tree, pending = {root}, [root]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in tree:
                tree.add(child)
                pending.append(child)
    return tree


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of `root` and its live descendants so far."""
    stats = _proc_stats()
    return sum(stats[pid][1] for pid in _tree(stats, root) if pid in stats) / CLOCK_TICKS


@dataclass
class Snapshot:
    wall: float
    busy: int
    stats: dict[int, tuple[int, int, str]]
    loadavg: tuple[float, float, float]


@dataclass
class Block:
    """One measured block; `result` is filled when it ends."""

    start: Snapshot
    result: dict[str, Any] = field(default_factory=dict)


class CpuMeter:
    """Splits the machine's CPU use during a block into this benchmark's tree and the rest."""

    def __init__(self, root_pid: int | None = None, threshold_cores: float = THRESHOLD_CORES):
        self.root = root_pid or os.getpid()
        self.threshold = threshold_cores

    def snapshot(self) -> Snapshot:
        return Snapshot(time.monotonic(), _machine_busy_ticks(), _proc_stats(), os.getloadavg())

    def measure(self, start: Snapshot, end: Snapshot | None = None) -> dict[str, Any]:
        end = end or self.snapshot()
        wall = max(end.wall - start.wall, 1e-6)
        own_pids = _tree(end.stats, self.root) | _tree(start.stats, self.root)
        own = 0
        outside: list[tuple[int, int, str]] = []
        for pid, (_, ticks, comm) in end.stats.items():
            before = start.stats.get(pid)
            delta = ticks - (before[1] if before is not None and before[2] == comm else 0)
            if before is None and pid not in own_pids:
                delta = 0  # born during the block: counted through the machine's busy time
            if pid in own_pids:
                own += max(delta, 0)
            elif delta > 0:
                outside.append((delta, pid, comm))
        busy = end.busy - start.busy
        outside_ticks = max(busy - own, 0)
        top = sorted(outside, reverse=True)[:3]
        outside_cores = outside_ticks / CLOCK_TICKS / wall
        return {
            "wall_s": round(wall, 3),
            "own_cores": round(own / CLOCK_TICKS / wall, 3),
            "outside_cores": round(outside_cores, 3),
            "loadavg_1m": [start.loadavg[0], end.loadavg[0]],
            "top_outside": [
                {"pid": pid, "comm": comm, "cores": round(t / CLOCK_TICKS / wall, 3)}
                for t, pid, comm in top
            ],
            "contended": outside_cores > self.threshold,
        }

    @contextlib.contextmanager
    def block(self) -> Iterator[Block]:
        block = Block(self.snapshot())
        try:
            yield block
        finally:
            block.result = self.measure(block.start)


def summarise(blocks: list[dict[str, Any]], threshold: float = THRESHOLD_CORES) -> dict[str, Any]:
    """Worst and median outside load over some blocks, and how many were contended."""
    if not blocks:
        return {"blocks": 0, "contended_blocks": 0, "outside_cores_max": 0.0}
    outside = sorted(b["outside_cores"] for b in blocks)
    loads = [v for b in blocks for v in b["loadavg_1m"]]
    heavy: dict[str, float] = {}
    for b in blocks:
        for t in b["top_outside"]:
            heavy[t["comm"]] = max(heavy.get(t["comm"], 0.0), t["cores"])
    return {
        "blocks": len(blocks),
        "contended_blocks": sum(1 for b in blocks if b["outside_cores"] > threshold),
        "outside_cores_max": outside[-1],
        "outside_cores_median": outside[len(outside) // 2],
        "loadavg_1m_max": max(loads),
        "threshold_cores": threshold,
        "heaviest_outside": dict(sorted(heavy.items(), key=lambda kv: -kv[1])[:5]),
    }
