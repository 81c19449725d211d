"""The operator at fleet scale: N nodes, M models, watch-fed caches against list-per-tick.

Three processes per run, each measured on its own: the emulated Kubernetes API
(`python -m tests.kubeemu`, a test double run as a program: nothing here imports tests/), the
real `hatswarm-operator` under kopf, and a simulated fleet of N AgentControl endpoints served
by a few worker processes (simfleet.py). The API holds N Ready Nodes (with a realistic status:
conditions, addresses, capacity, images), N Running agent Pods, one InferencePool and M
EdgeModels of 2 replicas each. For each (N, M) and each way of reading the cluster
(`--reads watch`, the default, and `--reads list`, the design before it), it measures:

- placement: operator start -> every replica Ready on the agents;
- steady state (a quiet pool, `steady_s` long): API requests per second by verb, read bytes per
  second (from the emulator's request log), tick time p50/p99 and event-loop lag p99 (the
  operator's own liveness probe), operator CPU (% of one core) and peak RSS;
- node death: kill a node holding replicas -> every replica Ready elsewhere, against the
  target of 3 s + the model's load time (1 s probes, 3 misses: detection alone takes 2-3 s);
- duplicate loads over the whole run (a LoadModel for a version the node already had): 0.

Ratios against the same run: list vs watch (reads, CPU, tick time), and the largest N against
the smallest (how each design grows with N). `make bench` runs the sizes in SIZES; pass
`--sizes 50x20,200x20,1000x20,1000x200` for the whole matrix.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from simfleet import SimFleet  # noqa: E402 (bench/ on sys.path)

OPERATOR = Path(sys.executable).parent / "hatswarm-operator"
POOL = "fleet"
NAMESPACE = "default"
SIZES = ((50, 20), (200, 20), (1000, 200))
QUICK_SIZES = ((50, 20), (200, 20))
HA_SIZE = (50, 20)
MODES = ("watch", "list")
LOAD_S = 0.5
FAILOVER_ROUNDS = 3
CHART = HERE / "fleet.png"
PROBE_INTERVAL_S = 1.0
PEERING_LIFETIME_S = 10
PEERING_CRD = {  # kopf's, as charts/hatswarm/templates/kopf-peering.yaml installs it
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
    "spec": {
        "scope": "Cluster",
        "group": "kopf.dev",
        "names": {"kind": "ClusterKopfPeering", "plural": "clusterkopfpeerings",
                  "singular": "clusterkopfpeering"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }}}],
    },
}  # fmt: skip
FAILURE_THRESHOLD = 3
TARGETS = {"tick_p99_s": 0.25, "cpu_pct": 25.0, "rss_mb": 400.0, "failover_beyond_load_s": 3.0}
TICK = os.sysconf("SC_CLK_TCK")


# --- the cluster's objects ---------------------------------------------------------------------


def node_name(i: int) -> str:
    return f"pi-{i:04d}"


def node_manifest(i: int) -> dict[str, Any]:
    """A Node as a kubelet reports it (heartbeat fields, capacity, images): ~3 KB of JSON."""
    name = node_name(i)
    stamp = "2026-11-27T08:00:00Z"
    conditions = [
        {"type": t, "status": "False", "reason": f"Kubelet{r}", "message": m,
         "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
        for t, r, m in (
            ("MemoryPressure", "HasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "HasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "HasSufficientPID", "kubelet has sufficient PID available"),
        )
    ] + [
        {"type": "Ready", "status": "True", "reason": "KubeletReady",
         "message": "kubelet is posting ready status", "lastHeartbeatTime": stamp,
         "lastTransitionTime": stamp},
    ]  # fmt: skip
    images = [
        {"names": [f"ghcr.io/hatswarm/{img}@sha256:{(i * 7919 + k):064x}",
                   f"ghcr.io/hatswarm/{img}:0.1.0"], "sizeBytes": 20_000_000 + k * 1_000_003}
        for k, img in enumerate(("agent", "pause", "coredns", "klipper-lb", "local-path",
                                 "metrics-server", "node-exporter", "promtail"))
    ]  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "hatswarm.io/pool": POOL,
                "hatswarm.io/line": f"line-{i % 20:02d}",
                "kubernetes.io/arch": "arm64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "k3s",
            },
            "annotations": {"k3s.io/node-args": '["agent"]', "flannel.alpha.coreos.com/backend-type": "vxlan"},
        },
        "spec": {"podCIDR": f"10.42.{i % 250}.0/24", "providerID": f"k3s://{name}"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": f"10.0.{i // 250}.{i % 250 + 1}"},
                          {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "4", "memory": "8052756Ki", "pods": "110",
                         "ephemeral-storage": "61255492Ki", "hailo.ai/h8l": "1"},
            "allocatable": {"cpu": "4", "memory": "8052756Ki", "pods": "110",
                            "ephemeral-storage": "59587503558", "hailo.ai/h8l": "1"},
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"architecture": "arm64", "bootID": f"{i:032x}",
                         "containerRuntimeVersion": "containerd://1.7.23-k3s2",
                         "kernelVersion": "6.6.51+rpt-rpi-2712", "kubeProxyVersion": "v1.31.4+k3s1",
                         "kubeletVersion": "v1.31.4+k3s1", "machineID": f"{i:032x}",
                         "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "systemUUID": f"{i:032x}"},
            "images": images,
        },
    }  # fmt: skip


def pod_manifest(i: int, port: int) -> dict[str, Any]:
    name = node_name(i)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"hatswarm-agent-{POOL}-{name}",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": "hatswarm-agent", "hatswarm.io/pool": POOL},
        },
        "spec": {
            "nodeName": name,
            "containers": [
                {
                    "name": "agent",
                    "image": "hatswarm/agent:0.1.0",
                    "ports": [{"name": "grpc", "containerPort": port}],
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pool_manifest(probe_interval_s: float = PROBE_INTERVAL_S) -> dict[str, Any]:
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": POOL, "namespace": NAMESPACE},
        "spec": {
            "nodeSelector": {"hatswarm.io/pool": POOL},
            "accelerators": ["hailo8l", "hailo8", "cpu"],
            "agent": {"backend": "simulated", "image": "hatswarm/agent:0.1.0"},
            "failureDetection": {
                "probeIntervalSeconds": probe_interval_s,
                "failureThreshold": FAILURE_THRESHOLD,
            },
        },
    }


def model_manifest(j: int) -> dict[str, Any]:
    name = f"model-{j:03d}"
    arts = [
        {"accelerator": acc, "format": fmt, "uri": f"https://models.example/{name}.{fmt}",
         "sha256": f"{j * 31 + k:064x}"}
        for k, (acc, fmt) in enumerate((("hailo8l", "hef"), ("hailo8", "hef"), ("cpu", "onnx")))
    ]  # fmt: skip
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "pool": POOL,
            "version": "1.0.0",
            "artifacts": arts,
            "replicas": {"min": 1, "max": 4, "desired": 2},
            "resources": {"memoryMiB": 256, "npuContexts": 1},
        },
    }


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Emulator:
    proc: subprocess.Popen[str]
    url: str
    kubeconfig: Path
    token: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120
        )


@contextmanager
def emulator(tmp: Path) -> Iterator[Emulator]:
    kubeconfig = tmp / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kubeemu", "--kubeconfig", str(kubeconfig),
         "--load", str(ROOT / "crds")],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("kubeemu ready on "):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        config = yaml.safe_load(kubeconfig.read_text())
        yield Emulator(
            proc,
            line.split()[3],
            kubeconfig,
            config["users"][0]["user"]["token"],
        )
    finally:
        proc.terminate()
        proc.wait(20)


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    health_port: int
    log: Path

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        with urllib.request.urlopen(url, timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data


@contextmanager
def operator(
    emu: Emulator, tmp: Path, reads: str, peering: tuple[str, ...] = ()
) -> Iterator[Operator]:
    """The real operator: `--standalone`, or peering with the flags given (as the chart)."""
    health = free_port()
    log = tmp / f"operator-{reads}-{health}.log"
    with log.open("wb") as out:
        profile = os.environ.get("FLEET_PROFILE")  # a cProfile of the operator, to look inside
        prefix = (
            [sys.executable, "-m", "cProfile", "-o", f"{profile}-{reads}.prof", "-m",
             "hatswarm_operator.kube.main"]
            if profile
            else [str(OPERATOR)]
        )  # fmt: skip
        proc = subprocess.Popen(
            [*prefix, *(peering or ["--standalone"]), "--all-namespaces", "--reads", reads,
             "--metrics-port", "0", "--liveness", f"http://127.0.0.1:{health}/healthz",
             "--log-format", "plain"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(emu.kubeconfig), "GRPC_VERBOSITY": "ERROR"},
        )  # fmt: skip
    try:
        yield Operator(proc, health, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait(fn: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


# --- one run -----------------------------------------------------------------------------------


READ_VERBS = ("list", "get")


def _rates(counts: dict[str, Any]) -> dict[str, Any]:
    seconds = max(float(counts["seconds"]), 1e-9)
    by_verb: dict[str, float] = {}
    by_resource: dict[str, float] = {}
    for verb, resource, n in counts["requests"]:
        by_verb[verb] = by_verb.get(verb, 0.0) + n / seconds
        if verb in READ_VERBS:
            by_resource[resource] = by_resource.get(resource, 0.0) + n / seconds
    read_bytes = sum(n for v, _, n in counts["response_bytes"] if v in READ_VERBS)
    return {
        "seconds": round(seconds, 1),
        "reads_per_s": round(sum(by_verb.get(v, 0.0) for v in READ_VERBS), 3),
        "writes_per_s": round(
            sum(r for v, r in by_verb.items() if v in ("create", "update", "patch", "delete")), 3
        ),
        "read_kb_per_s": round(read_bytes / seconds / 1024, 2),
        "watch_events_per_s": round(sum(counts["watch_events"].values()) / seconds, 3),
        "by_verb": {k: round(v, 3) for k, v in sorted(by_verb.items())},
        "reads_by_resource": {k: round(v, 3) for k, v in sorted(by_resource.items())},
    }


def run_one(
    nodes: int,
    models: int,
    reads: str,
    steady_s: float,
    tmp: Path,
    probe_interval_s: float = PROBE_INTERVAL_S,
) -> dict[str, Any]:
    names = [node_name(i) for i in range(nodes)]
    processes = max(1, min(4, nodes // 200 + 1))
    with SimFleet(names, processes=processes, load_s=LOAD_S) as fleet, emulator(tmp) as emu:
        api = emu.client()
        objects: list[dict[str, Any]] = [node_manifest(i) for i in range(nodes)]
        objects += [pod_manifest(i, fleet.ports[n]) for i, n in enumerate(names)]
        objects += [pool_manifest(probe_interval_s)] + [model_manifest(j) for j in range(models)]
        api.post("/kubeemu/objects", json=objects).raise_for_status()
        model_names = [f"model-{j:03d}" for j in range(models)]
        want = 2 * models

        def placed() -> bool:
            return replicas_ready(fleet, model_names) >= want

        with operator(emu, tmp, reads) as op:
            started = time.monotonic()
            wait(placed, 300, f"{want} replicas Ready")
            placement_s = time.monotonic() - started

            def settled() -> bool:  # every model's status says 2/2 (the loop has published)
                items = api.get(f"/apis/hatswarm.io/v1alpha1/namespaces/{NAMESPACE}/edgemodels")
                return all(
                    (m.get("status") or {}).get("ready") == "2/2" for m in items.json()["items"]
                )

            wait(settled, 120, "statuses published", every=1.0)
            time.sleep(3.0)  # the last status patches' watch events reach the caches

            api.get("/kubeemu/counts", params={"reset": "true"})
            load0 = os.getloadavg()[0]
            api0 = cpu_seconds(emu.proc.pid)
            cpu0, t0 = cpu_seconds(op.proc.pid), time.monotonic()
            fleet0 = fleet.totals()
            time.sleep(steady_s)
            cpu1, t1 = cpu_seconds(op.proc.pid), time.monotonic()
            api1 = cpu_seconds(emu.proc.pid)
            load1 = os.getloadavg()[0]
            steady = _rates(api.get("/kubeemu/counts").json())
            loop = op.health().get("loop", {})
            window = time.monotonic() - t0
            ticks = sorted(d for ago, d in loop.get("recent_ticks", []) if ago <= window)
            fleet1 = fleet.totals()
            probes_per_s = (fleet1["NodeStatus"] - fleet0["NodeStatus"]) / (t1 - t0)

            rounds = [failover(fleet, model_names) for _ in range(FAILOVER_ROUNDS)]
            rss = peak_rss_mb(op.proc.pid)
            totals = fleet.totals()
        api.close()
    cpu_pct = 100.0 * (cpu1 - cpu0) / (t1 - t0)
    out = {
        "nodes": nodes,
        "models": models,
        "reads": reads,
        "probe_interval_s": probe_interval_s,
        "placement_s": round(placement_s, 2),
        "steady": steady,
        "tick_p50_s": quantile(ticks, 0.5),
        "tick_p99_s": quantile(ticks, 0.99),
        "tick_max_s": ticks[-1] if ticks else None,
        "ticks_per_s": round(len(ticks) / steady_s, 2),
        "probe_round_p50_p99_s": [
            v for r in (loop.get("probe_rounds") or {}).values() for v in (r["p50_s"], r["p99_s"])
        ],
        "lag_p99_last_10s_s": loop.get("last_10s", {}).get("lag_p99_s"),
        "lag_max_last_10s_s": loop.get("last_10s", {}).get("lag_max_s"),
        "probes_per_s": round(probes_per_s, 1),
        "operator_cpu_pct": round(cpu_pct, 1),
        "operator_cpu_s_per_min": round(cpu_pct * 0.6, 2),
        "operator_peak_rss_mb": round(rss, 1),
        "apiserver_cpu_pct": round(100.0 * (api1 - api0) / (t1 - t0), 1),
        "machine_load_avg": [round(load0, 2), round(load1, 2)],
        "failover": {
            "rounds": rounds,
            "load_s": LOAD_S,
            "detect_s": median(r["detect_s"] for r in rounds if r["detect_s"] is not None),
            "recovery_s": median(r["recovery_s"] for r in rounds),
            "recovery_max_s": max(r["recovery_s"] for r in rounds),
            "recovery_over_load_s": round(
                statistics.median(r["recovery_s"] for r in rounds) - LOAD_S, 2
            ),
        },
        "agent_calls": dict(totals),
        "duplicate_loads": int(totals.get("duplicate_loads", 0)),
    }
    print(
        f"  {reads:>5} N={nodes:<5} M={models:<4} reads/s {steady['reads_per_s']:8.2f} "
        f"({steady['read_kb_per_s']:9.1f} KB/s) writes/s {steady['writes_per_s']:6.2f} "
        f"tick p50/p99 {out['tick_p50_s']}/{out['tick_p99_s']} s  CPU {cpu_pct:5.1f}%  "
        f"RSS {rss:5.0f} MB  failover {out['failover']['recovery_s']:.2f} s "
        f"(acting after {out['failover']['detect_s']} s)  dup loads {out['duplicate_loads']}",
        flush=True,
    )
    return out


def replicas_ready(fleet: SimFleet, models: list[str]) -> int:
    return sum(len(v) for v in fleet.ready_nodes(models).values())


def run_ha(nodes: int, models: int, tmp: Path) -> dict[str, Any]:
    """Two replicas peering as the chart runs them (`--priority auto`); the active one is
    SIGKILLed: time until the other probes the agents, and duplicate loads (none)."""
    names = [node_name(i) for i in range(nodes)]
    model_names = [f"model-{j:03d}" for j in range(models)]
    peering = ("--peering-name", "hatswarm", "--priority", "auto",
               "--peering-lifetime", str(PEERING_LIFETIME_S))  # fmt: skip
    with SimFleet(names, processes=2, load_s=LOAD_S) as fleet, emulator(tmp) as emu:
        api = emu.client()
        objects: list[dict[str, Any]] = [node_manifest(i) for i in range(nodes)]
        objects += [pod_manifest(i, fleet.ports[n]) for i, n in enumerate(names)]
        objects += [pool_manifest()] + [model_manifest(j) for j in range(models)]
        objects += [PEERING_CRD]
        api.post("/kubeemu/objects", json=objects).raise_for_status()
        peer = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                "metadata": {"name": "hatswarm"}}  # fmt: skip
        api.post("/kubeemu/objects", json=[peer]).raise_for_status()
        with operator(emu, tmp, "watch", peering) as a, operator(emu, tmp, "watch", peering) as b:
            wait(lambda: replicas_ready(fleet, model_names) >= 2 * models, 300, "placement")

            def acting(op: Operator) -> bool:
                try:
                    return bool(op.health().get("pools"))
                except OSError:
                    return False

            def peers() -> int:
                obj = api.get("/apis/kopf.dev/v1/clusterkopfpeerings/hatswarm").json()
                return len(obj.get("status") or {})

            wait(lambda: peers() == 2, 90, "both replicas in the peering object")
            seen: list[Operator | None] = [None]

            def settled() -> Operator | None:  # two answers in a row agree (they are cached)
                running = [op for op in (a, b) if acting(op)]
                now = running[0] if len(running) == 1 else None
                agreed = now is not None and now is seen[0]
                seen[0] = now
                return now if agreed else None

            active = wait(settled, 120, "one replica acting, the other paused", every=3.0)
            probes = fleet.totals()["NodeStatus"]
            t0 = time.monotonic()
            time.sleep(4.0)
            one_rate = (fleet.totals()["NodeStatus"] - probes) / (time.monotonic() - t0)
            loads = fleet.totals()["loads"]
            probes = fleet.totals()["NodeStatus"]
            killed = time.monotonic()
            active.proc.kill()
            active.proc.wait()
            wait(lambda: fleet.totals()["NodeStatus"] > probes + nodes, 120, "the standby probing")
            handover_s = time.monotonic() - killed
            deaths = failover(fleet, model_names)
            totals = fleet.totals()
        api.close()
    out = {
        "nodes": nodes,
        "models": models,
        "peering_lifetime_s": PEERING_LIFETIME_S,
        "probes_per_s_while_two_run": round(one_rate, 1),
        "handover_s": round(handover_s, 2),
        "failover_after_handover_s": deaths["recovery_s"],
        "loads_after_handover": int(totals["loads"] - loads),
        "duplicate_loads": int(totals.get("duplicate_loads", 0)),
        "unloads": int(totals.get("unloads", 0)),
    }
    print(
        f"  HA N={nodes}: two replicas probe {one_rate:.0f}/s (one's rate: {nodes}/s); "
        f"SIGKILL of the active -> the standby acting after {handover_s:.1f} s "
        f"(lifetime {PEERING_LIFETIME_S} s); dup loads {out['duplicate_loads']}, unloads {out['unloads']}",
        flush=True,
    )
    return out


def median(values: Iterable[float]) -> float | None:
    found = list(values)
    return round(statistics.median(found), 3) if found else None


def failover(fleet: SimFleet, models: list[str]) -> dict[str, Any]:
    """Kill the first live node holding a replica; time until each of its replicas is Ready
    elsewhere (`recovery_s`), and until the first of them began loading (`detect_s`: the
    probes' misses, then the tick that re-placed them)."""
    ready = fleet.ready_nodes(models)
    victim = min(n for holders in ready.values() for n in holders)
    held = sorted(m for m, holders in ready.items() if victim in holders)
    before = {m: len(ready[m]) for m in held}
    killed_at, killed = time.time(), time.monotonic()
    fleet.kill(victim)

    def recovered() -> bool:
        now = fleet.ready_nodes(held)
        return all(len([n for n in now.get(m, []) if n != victim]) >= before[m] for m in held)

    wait(recovered, 120, f"replicas of {victim} Ready elsewhere", every=0.05)
    recovery_s = time.monotonic() - killed
    starts = [
        at
        for report in fleet.report().values()
        for unit, at in report["load_started"].items()
        if unit.split("@")[0] in held and at >= killed_at
    ]
    return {
        "victim": victim,
        "replicas": len(held),
        "recovery_s": round(recovery_s, 3),
        "detect_s": round(min(starts) - killed_at, 3) if starts else None,
    }


# --- the benchmark -----------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted `values` (None when empty)."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 3)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios: list vs watch per size, largest vs smallest N per design, each vs its target."""
    by = {(r["reads"], r["nodes"], r["models"]): r for r in runs}
    ratios: dict[str, Any] = {}
    sizes = sorted({(r["nodes"], r["models"]) for r in runs})
    for n, m in sizes:
        w, li = by.get(("watch", n, m)), by.get(("list", n, m))
        tag = f"n{n}_m{m}"
        if w is not None and li is not None:
            ratios[f"reads_per_s_list_vs_watch_{tag}"] = _ratio(
                li["steady"]["reads_per_s"], max(w["steady"]["reads_per_s"], 0.01)
            )
            ratios[f"cpu_list_vs_watch_{tag}"] = _ratio(
                li["operator_cpu_pct"], w["operator_cpu_pct"]
            )
            ratios[f"tick_p99_list_vs_watch_{tag}"] = _ratio(li["tick_p99_s"], w["tick_p99_s"])
        if w is not None:
            ratios[f"tick_p99_vs_target_{tag}"] = _ratio(w["tick_p99_s"], TARGETS["tick_p99_s"])
            ratios[f"cpu_vs_target_{tag}"] = _ratio(w["operator_cpu_pct"], TARGETS["cpu_pct"])
            ratios[f"rss_vs_target_{tag}"] = _ratio(w["operator_peak_rss_mb"], TARGETS["rss_mb"])
            ratios[f"recovery_over_load_vs_target_{tag}"] = _ratio(
                w["failover"]["recovery_over_load_s"], TARGETS["failover_beyond_load_s"]
            )
    for mode in MODES:
        mine = sorted(
            (r for r in runs if r["reads"] == mode), key=lambda r: (r["nodes"], r["models"])
        )
        if len(mine) >= 2 and mine[-1]["nodes"] > mine[0]["nodes"]:
            small, big = mine[0], mine[-1]
            tag = f"n{big['nodes']}_vs_n{small['nodes']}"
            ratios[f"{mode}_reads_per_s_{tag}"] = _ratio(
                max(big["steady"]["reads_per_s"], 0.01), max(small["steady"]["reads_per_s"], 0.01)
            )
            ratios[f"{mode}_cpu_{tag}"] = _ratio(big["operator_cpu_pct"], small["operator_cpu_pct"])
    return {k: v for k, v in ratios.items() if v is not None}


def run(
    quick: bool = False,
    sizes: tuple[tuple[int, int], ...] | None = None,
    modes: tuple[str, ...] = MODES,
    steady_s: float | None = None,
    probe_interval_s: float = PROBE_INTERVAL_S,
    ha: bool = True,
    chart_path: Path = CHART,
) -> dict[str, Any]:
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    steady_s = steady_s or (10.0 if quick else 20.0)
    runs = []
    with tempfile.TemporaryDirectory(prefix="hatswarm-fleet-") as tmp:
        for nodes, models in sizes:
            for mode in modes:
                path = Path(tmp) / f"{mode}-{nodes}-{models}"
                path.mkdir()
                runs.append(run_one(nodes, models, mode, steady_s, path, probe_interval_s))
        handover = None
        if ha:
            path = Path(tmp) / "ha"
            path.mkdir()
            handover = run_ha(HA_SIZE[0], HA_SIZE[1], path)
    result = {
        "name": "fleet",
        "load_s": LOAD_S,
        "probe_interval_s": PROBE_INTERVAL_S,
        "failure_threshold": FAILURE_THRESHOLD,
        "steady_s": steady_s,
        "targets": TARGETS,
        "runs": runs,
        "ha": handover,
        "ratios": summarize(runs),
        "duplicate_loads": sum(r["duplicate_loads"] for r in runs)
        + (handover["duplicate_loads"] if handover else 0),
        "chart": chart_path.name,
    }
    try:
        chart(result, chart_path)
    except ImportError:
        print("matplotlib missing (the operator's `plot` extra): no chart", file=sys.stderr)
    return result


def chart(result: dict[str, Any], path: Path) -> None:
    """Reads/s, CPU and tick p99 against N, one line per design and model count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [
        r for r in result["runs"] if r.get("probe_interval_s", PROBE_INTERVAL_S) == PROBE_INTERVAL_S
    ]
    panels = (
        (
            "API reads/s, steady (0 drawn at 0.01)",
            lambda r: max(r["steady"]["reads_per_s"], 0.01),
            True,
        ),
        ("agent probes/s", lambda r: r["probes_per_s"], True),
        ("operator CPU, % of a core", lambda r: r["operator_cpu_pct"], False),
        ("tick p99, s", lambda r: r["tick_p99_s"] or 0.0, False),
        ("node death -> Ready elsewhere (median), s", lambda r: r["failover"]["recovery_s"], False),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, value, log) in zip(axes, panels, strict=True):
        for mode in MODES:
            for models in sorted({r["models"] for r in runs}):
                pts = sorted(
                    (r["nodes"], value(r))
                    for r in runs
                    if r["reads"] == mode and r["models"] == models
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o",
                            linestyle="-" if mode == "watch" else "--", label=f"{mode}, {models} models")  # fmt: skip
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("nodes")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "hatswarm operator at fleet scale: watch-fed caches (solid) vs list per tick (dashed)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in text.split(","):
        n, _, m = part.strip().partition("x")
        out.append((int(n), int(m or 20)))
    return tuple(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, short windows (smoke)")
    p.add_argument("--sizes", type=_sizes, help="NODESxMODELS,... e.g. 50x20,1000x200")
    p.add_argument("--modes", default=",".join(MODES), help="watch,list")
    p.add_argument("--steady", type=float, help="seconds of steady state measured per run")
    p.add_argument("--probe-interval", type=float, default=PROBE_INTERVAL_S, help="seconds")
    p.add_argument("--no-ha", action="store_true", help="skip the two-replica handover")
    p.add_argument("--out", type=Path, default=HERE / "fleet-results.json")
    args = p.parse_args()
    modes = tuple(m for m in args.modes.split(",") if m)
    result = run(args.quick, args.sizes, modes, args.steady, args.probe_interval, not args.no_ha)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["ratios"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
