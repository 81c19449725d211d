"""Node-agent benchmark (issue #3): the hatswarm agent against raw onnxruntime, KServe, MLServer.

Same machine, same run, one server at a time, ``tritonclient.grpc`` as the client of every
server. Two models from ``bench/models.py``: a MobileNet-sized CNN (224x224x3 uint8) and a tiny
MLP (float32 [N, 16]). For each server: warm up, then measure per round

- CNN batch-1 p50 (1 client, sequential) and throughput at 8 concurrent clients;
- MLP batch-1 p50 and throughput at 8 concurrent clients.

The baseline is raw ``session.run`` in this process: p50 with the faster of 1 and 2 intra-op
threads; throughput the best of sequential runs at 2 threads and 8 threads calling one
1-thread session concurrently.

Rounds are the outer loop: in each round every server is started, warmed up, measured and
stopped in turn (the order rotates per round), so drift in the load of these shared cores
spreads over all servers. Raw onnxruntime is measured inside the agent's slot, after its
warm-up, while it sits idle: agent/raw ratios are paired per round. Figures are medians over
rounds (quick: 1 short round, full: 5).

Peers run in their own cached venvs under bench/out/venvs/ (created on first use, progress
shown live). A peer that cannot be installed or started is recorded as skipped with the
reason; the benchmark never fails for it. Every process started is stopped on exit.

    uv run --frozen python bench/agent_bench.py [--quick] [--json PATH] [--skip-peers]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
MODELS_DIR = OUT_DIR / "models"
VENVS_DIR = OUT_DIR / "venvs"
LOGS_DIR = OUT_DIR / "logs"
PEERS_DIR = BENCH_DIR / "peers"
HOST = "127.0.0.1"
CLIENTS = 8
INFER_TIMEOUT_S = 30.0  # a request slower than this is a hung server: fail it, don't wait
MODEL_NAMES = ("cnn", "mlp")


def _load_models_module() -> ModuleType:
    """bench/ is not a package (bench/run.py imports this file): load models.py beside it."""
    name = "hatswarm_bench_models"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / "models.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


models = _load_models_module()


# --------------------------------------------------------------------------------------------
# Plan and workloads


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs."""

    rounds: int
    latency_s: float
    throughput_s: float
    warmup_s: float


QUICK = Plan(rounds=1, latency_s=0.5, throughput_s=0.8, warmup_s=0.3)
FULL = Plan(rounds=5, latency_s=2.5, throughput_s=3.0, warmup_s=1.5)


@dataclass(frozen=True)
class Workload:
    model: str
    input_name: str
    datatype: str
    output_name: str
    data: np.ndarray


def workloads() -> dict[str, Workload]:
    return {
        "cnn": Workload("cnn", models.CNN_INPUT, "UINT8", models.CNN_OUTPUT, models.cnn_input(1)),
        "mlp": Workload("mlp", models.MLP_INPUT, "FP32", models.MLP_OUTPUT, models.mlp_input(1)),
    }


class Caller(Protocol):
    """One client: a blocking call that runs one inference, and its cleanup."""

    def __call__(self) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass
class _FnCaller:
    fn: Callable[[], np.ndarray]
    on_close: Callable[[], None] = lambda: None

    def __call__(self) -> np.ndarray:
        return self.fn()

    def close(self) -> None:
        self.on_close()


# --------------------------------------------------------------------------------------------
# Load generation


def measure_latency(call: Caller, seconds: float, min_samples: int = 5) -> dict[str, float]:
    """Sequential calls for ``seconds``: p50/p90/p99 in milliseconds and sequential req/s."""
    samples: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline or len(samples) < min_samples:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    q = np.percentile(np.array(samples) * 1e3, [50, 90, 99])
    return {
        "p50_ms": float(q[0]),
        "p90_ms": float(q[1]),
        "p99_ms": float(q[2]),
        "samples": len(samples),
        "rps": len(samples) / elapsed,
    }


def measure_throughput(make_caller: Callable[[], Caller], clients: int, seconds: float) -> float:
    """``clients`` threads, each with its own client, calling back to back: completed req/s."""
    callers = [make_caller() for _ in range(clients)]  # connect before the clock starts
    barrier = threading.Barrier(clients + 1)
    stop = threading.Event()
    counts = [0] * clients
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        call = callers[index]
        barrier.wait()
        done = 0
        try:
            while not stop.is_set():
                call()
                done += 1
        except BaseException as exc:  # reported after the join
            errors.append(exc)
        counts[index] = done

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    try:
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        for caller in callers:
            caller.close()
    if errors:
        first = errors[0]
        raise RuntimeError(
            f"{len(errors)} client(s) failed: {type(first).__name__}: {first}"
        ) from first
    return sum(counts) / elapsed


def warm_up(make_caller: Callable[[], Caller], seconds: float) -> None:
    caller = make_caller()
    try:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            caller()
    finally:
        caller.close()
    measure_throughput(make_caller, CLIENTS, seconds / 2)  # spin up the server's thread pools


# --------------------------------------------------------------------------------------------
# Targets: raw onnxruntime in-process, or any OIP gRPC server


class RawTarget:
    """Raw ``session.run`` in this process, one session per intra-op thread count."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.sessions: dict[tuple[str, int], ort.InferenceSession] = {}
        for name, path in paths.items():
            for threads in (1, 2):
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                self.sessions[(name, threads)] = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )

    def caller(self, work: Workload, threads: int) -> Caller:
        session = self.sessions[(work.model, threads)]
        feeds = {work.input_name: work.data}

        def run() -> np.ndarray:
            return np.asarray(session.run(None, feeds)[0])

        return _FnCaller(run)


class OipTarget:
    """A server speaking the Open Inference Protocol over gRPC, driven by tritonclient."""

    def __init__(self, url: str) -> None:
        self.url = url

    def caller(self, work: Workload) -> Caller:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        request = grpcclient.InferInput(work.input_name, list(work.data.shape), work.datatype)
        request.set_data_from_numpy(work.data)
        inputs = [request]

        def infer() -> np.ndarray:
            result = client.infer(work.model, inputs, client_timeout=INFER_TIMEOUT_S)
            return np.asarray(result.as_numpy(work.output_name))

        return _FnCaller(infer, client.close)

    def ready(self, model_names: Sequence[str]) -> bool:
        import tritonclient.grpc as grpcclient

        try:
            client = grpcclient.InferenceServerClient(self.url)
            try:
                return bool(client.is_server_live(client_timeout=5)) and all(
                    client.is_model_ready(name, client_timeout=5) for name in model_names
                )
            finally:
                client.close()
        except Exception:
            return False


# --------------------------------------------------------------------------------------------
# Server processes


_LIVE: set[subprocess.Popen[bytes]] = set()


def _stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    # Children of the group (e.g. MLServer's workers) may outlive the leader.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    _LIVE.discard(proc)


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE):
        _stop_process(proc, grace_s=3.0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerSpec:
    key: str
    label: str
    argv: list[str]
    grpc_port: int
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_timeout_s: float = 120.0


class ServerStartError(RuntimeError):
    pass


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def serving(spec: ServerSpec) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group, wait until every model is ready, stop it."""
    LOGS_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOGS_DIR / f"{spec.key}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,
        )
    _LIVE.add(proc)
    try:
        target = OipTarget(f"{HOST}:{spec.grpc_port}")
        deadline = time.monotonic() + spec.ready_timeout_s
        while not target.ready(MODEL_NAMES):
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{spec.label} exited with {proc.returncode}; log {log_path}:\n"
                    + _log_tail(log_path)
                )
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{spec.label} not ready after {spec.ready_timeout_s:.0f} s; log {log_path}:\n"
                    + _log_tail(log_path)
                )
            time.sleep(0.25)
        yield proc
    finally:
        _stop_process(proc)


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a process and its descendants, in MiB."""
    pids = [pid]
    try:
        import psutil

        with contextlib.suppress(psutil.Error):
            pids += [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pending = [pid]
        while pending:
            current = pending.pop()
            for task in Path(f"/proc/{current}/task").glob("*"):
                with contextlib.suppress(OSError):
                    kids = [int(k) for k in (task / "children").read_text().split()]
                    pids += kids
                    pending += kids
    total_kb = 0
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024 if total_kb else None


# --------------------------------------------------------------------------------------------
# Peer venvs (cached)


@dataclass(frozen=True)
class PeerEnv:
    name: str
    requirement_sets: tuple[tuple[str, ...], ...]  # tried in order: pinned, then fallback

    @property
    def venv(self) -> Path:
        return VENVS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


KSERVE_ENV = PeerEnv(
    "kserve",
    (("kserve>=0.21,<0.22", "onnxruntime", "numpy"), ("kserve", "onnxruntime", "numpy")),
)
MLSERVER_ENV = PeerEnv(
    "mlserver",
    (
        ("mlserver>=1.7,<1.8", "uvloop<0.22", "onnxruntime"),
        ("mlserver", "uvloop<0.22", "onnxruntime"),
    ),
)
_READY_MARK = ".hatswarm-bench-ready"
# Fail fast without a network (pip's defaults retry for many minutes); progress stays line-based.
_PIP_FLAGS = ("--progress-bar", "off", "--retries", "2", "--timeout", "30")


def log(message: str) -> None:
    print(f"[agent-bench] {message}", file=sys.stderr, flush=True)


def _stream(argv: list[str], prefix: str, timeout_s: float) -> tuple[int, list[str]]:
    """Run a command, echoing its output live with a prefix; return code and last lines."""
    tail: list[str] = []
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-19:], line]
            print(f"  [{prefix}] {line}", file=sys.stderr, flush=True)
        return proc.wait(), tail
    finally:
        timer.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ensure_peer_env(peer: PeerEnv, timeout_s: float = 1200.0) -> tuple[Path | None, str]:
    """Create the peer's venv once, reuse it after: (python, version) or (None, reason)."""
    mark = peer.venv / _READY_MARK
    with contextlib.suppress(OSError, ValueError, KeyError):
        cached = json.loads(mark.read_text())
        if peer.python.exists() and tuple(cached["requirements"]) in peer.requirement_sets:
            return peer.python, str(cached["version"])
    log(f"setting up the {peer.name} venv in {peer.venv} (first run only)")
    if not peer.python.exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        code, tail = _stream([base, "-m", "venv", str(peer.venv)], peer.name, 300)
        if code != 0:
            shutil.rmtree(peer.venv, ignore_errors=True)
            return None, "venv creation failed: " + " | ".join(tail[-3:])
    reason = "no requirement set tried"
    for requirements in peer.requirement_sets:
        log(f"pip install {' '.join(requirements)}")
        code, tail = _stream(
            [str(peer.python), "-m", "pip", "install", *_PIP_FLAGS, *requirements],
            peer.name,
            timeout_s,
        )
        if code == 0:
            version = _installed_version(peer)
            mark.write_text(json.dumps({"version": version, "requirements": requirements}))
            return peer.python, version
        reason = f"pip install {' '.join(requirements)} failed: " + " | ".join(tail[-3:])
        log(reason)
    return None, reason


def _installed_version(peer: PeerEnv) -> str:
    dist = peer.requirement_sets[0][0].split(">")[0].split("<")[0].split("=")[0]
    out = subprocess.run(
        [str(peer.python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{dist} {out.stdout.strip() or '?'}"


# --------------------------------------------------------------------------------------------
# Server specs


def _agent_executable() -> str | None:
    exe = Path(sys.executable).parent / "hatswarm-agent"
    return str(exe) if exe.exists() else shutil.which("hatswarm-agent")


def agent_unavailable() -> str | None:
    """Why the agent cannot be benchmarked here, or None when it can."""
    if _agent_executable() is None:
        return "the hatswarm-agent console script is not installed in this environment"
    if importlib.util.find_spec("hatswarm_agent") is None:
        return "the hatswarm_agent package is not importable"
    if importlib.util.find_spec("hatswarm_agent.cli") is None:
        return "hatswarm_agent.cli (the hatswarm-agent entry point) does not exist yet"
    return None


def agent_spec(paths: dict[str, Path], extra_args: Sequence[str] = ()) -> ServerSpec:
    exe = _agent_executable()
    if exe is None:
        raise ServerStartError("hatswarm-agent is not installed")
    port = free_port()
    argv = [exe, "--host", HOST, "--port", str(port), "--metrics-port", "0"]
    for name, path in paths.items():
        argv += ["--model", f"{name}={path}"]
    if "--state-dir" in _agent_help(exe):
        state = OUT_DIR / "agent-state"  # fresh each start: no assignment carried over
        shutil.rmtree(state, ignore_errors=True)
        argv += ["--state-dir", str(state)]
    return ServerSpec("agent", "hatswarm-agent", [*argv, *extra_args], port, ready_timeout_s=60)


@functools.cache
def _agent_help(exe: str) -> str:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        return subprocess.run(
            [exe, "--help"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    return ""


def kserve_spec(python: Path, paths: dict[str, Path], tuned: bool) -> ServerSpec:
    port = free_port()
    argv = [str(python), str(PEERS_DIR / "kserve_server.py")]
    argv += ["--grpc-port", str(port), "--http-port", str(free_port())]
    for name, path in paths.items():
        argv += ["--model", f"{name}={path}"]
    if tuned:
        argv.append("--tuned")
    key = "kserve_tuned" if tuned else "kserve_default"
    label = f"KServe ({'tuned' if tuned else 'default'})"
    return ServerSpec(key, label, argv, port, ready_timeout_s=120)


def mlserver_spec(python: Path, paths: dict[str, Path], tuned: bool) -> ServerSpec:
    key = "mlserver_tuned" if tuned else "mlserver_default"
    repo = OUT_DIR / key
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    for name, path in paths.items():
        template = json.loads((PEERS_DIR / "mlserver" / name / "model-settings.json").read_text())
        template["parameters"]["uri"] = str(path)
        (repo / name).mkdir()
        (repo / name / "model-settings.json").write_text(json.dumps(template, indent=2))
    port = free_port()
    settings: dict[str, Any] = {
        "host": HOST,
        "grpc_port": port,
        "http_port": free_port(),
        "metrics_port": free_port(),
    }
    if tuned:
        settings |= {"parallel_workers": 0, "debug": False}
    (repo / "settings.json").write_text(json.dumps(settings, indent=2))
    mlserver = python.parent / "mlserver"
    label = f"MLServer ({'tuned' if tuned else 'default'})"
    pythonpath = os.pathsep.join(
        p for p in (str(PEERS_DIR / "mlserver"), os.environ.get("PYTHONPATH", "")) if p
    )
    return ServerSpec(
        key,
        label,
        [str(mlserver), "start", str(repo)],
        port,
        env={"PYTHONPATH": pythonpath},
        cwd=repo,
        ready_timeout_s=180,
    )


# --------------------------------------------------------------------------------------------
# Measurement rounds


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def measure_raw_round(raw: RawTarget, work: Workload, plan: Plan) -> dict[str, float]:
    lat = {t: measure_latency(raw.caller(work, t), plan.latency_s) for t in (1, 2)}
    best = min((1, 2), key=lambda t: lat[t]["p50_ms"])
    concurrent = measure_throughput(lambda: raw.caller(work, 1), CLIENTS, plan.throughput_s)
    sequential = measure_throughput(lambda: raw.caller(work, 2), 1, plan.throughput_s)
    return {
        "p50_ms": lat[best]["p50_ms"],
        "p99_ms": lat[best]["p99_ms"],
        "p50_threads": best,
        "p50_ms_1_thread": lat[1]["p50_ms"],
        "p50_ms_2_threads": lat[2]["p50_ms"],
        "throughput_rps": max(concurrent, sequential),
        "throughput_sequential_2_threads_rps": sequential,
        "throughput_concurrent_1_thread_rps": concurrent,
        "loadavg_1m": os.getloadavg()[0],
    }


def measure_server_round(target: OipTarget, work: Workload, plan: Plan) -> dict[str, float]:
    caller = target.caller(work)
    try:
        lat = measure_latency(caller, plan.latency_s)
    finally:
        caller.close()
    rps = measure_throughput(lambda: target.caller(work), CLIENTS, plan.throughput_s)
    return {
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "throughput_rps": rps,
        "loadavg_1m": os.getloadavg()[0],
    }


def _summarise(rounds: list[dict[str, float]]) -> dict[str, Any]:
    keys = rounds[0].keys()
    summary: dict[str, Any] = {k: _median([r[k] for r in rounds]) for k in keys}
    summary["rounds"] = rounds
    return summary


def _check_outputs(target: OipTarget, raw: RawTarget, work: Workload) -> bool:
    caller = target.caller(work)
    try:
        got = caller()
    finally:
        caller.close()
    want = raw.caller(work, 1)()
    return bool(got.shape == want.shape and np.allclose(got, want, rtol=1e-3, atol=1e-3))


def _fmt(summary: dict[str, Any]) -> str:
    return f"p50 {summary['p50_ms']:.2f} ms, {summary['throughput_rps']:.0f} req/s"


@dataclass
class Contender:
    """A server under test and what it measured so far, round by round."""

    key: str
    label: str
    make_spec: Callable[[], ServerSpec]
    version: str = ""
    failure: str | None = None
    rounds: dict[str, list[dict[str, float]]] = field(
        default_factory=lambda: {m: [] for m in MODEL_NAMES}
    )
    startup_s: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    outputs_match_raw: dict[str, bool] = field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        if self.failure is not None or not self.rounds["cnn"]:
            return {
                "status": "failed",
                "version": self.version,
                "reason": self.failure or "no round measured",
            }
        return {
            "status": "ok",
            "version": self.version,
            "startup_s": _median(self.startup_s),
            "peak_rss_mb": max(self.peak_rss_mb) if self.peak_rss_mb else None,
            "outputs_match_raw": self.outputs_match_raw,
            **{m: _summarise(self.rounds[m]) for m in MODEL_NAMES},
        }


def _raw_warm_up(raw: RawTarget, work: dict[str, Workload], plan: Plan) -> None:
    for w in work.values():
        for threads in (1, 2):
            warm_up(functools.partial(raw.caller, w, threads), plan.warmup_s / 2)


def _measure_raw(
    raw: RawTarget,
    work: dict[str, Workload],
    plan: Plan,
    raw_rounds: dict[str, list[dict[str, float]]],
    index: int,
) -> None:
    _raw_warm_up(raw, work, plan)
    for m in MODEL_NAMES:
        raw_rounds[m].append(measure_raw_round(raw, work[m], plan))
        log(f"round {index + 1}/{plan.rounds} raw {m}: {_fmt(raw_rounds[m][-1])}")


def bench_round(
    contender: Contender,
    raw: RawTarget,
    plan: Plan,
    work: dict[str, Workload],
    index: int,
    raw_rounds: dict[str, list[dict[str, float]]] | None = None,
) -> None:
    """One round of one server: start it, warm up, measure both models, stop it.

    With ``raw_rounds`` (the agent's slot), raw onnxruntime is measured in the same round,
    between the warm-up and the agent's measurement, while the agent sits idle.
    """
    log(f"round {index + 1}/{plan.rounds}: starting {contender.label}")
    t0 = time.monotonic()
    try:
        spec = contender.make_spec()
        with serving(spec) as proc:
            contender.startup_s.append(time.monotonic() - t0)
            target = OipTarget(f"{HOST}:{spec.grpc_port}")
            if not contender.outputs_match_raw:
                contender.outputs_match_raw = {
                    m: _check_outputs(target, raw, work[m]) for m in MODEL_NAMES
                }
            for m in MODEL_NAMES:
                warm_up(functools.partial(target.caller, work[m]), plan.warmup_s)
            if raw_rounds is not None:
                _measure_raw(raw, work, plan, raw_rounds, index)
            measured = {m: measure_server_round(target, work[m], plan) for m in MODEL_NAMES}
            rss = peak_rss_mb(proc.pid)
    except Exception as exc:
        contender.failure = f"{type(exc).__name__}: {exc}"
        log(f"{contender.label} failed: {contender.failure}")
        return
    for m in MODEL_NAMES:
        contender.rounds[m].append(measured[m])
        log(f"round {index + 1}/{plan.rounds} {contender.label} {m}: {_fmt(measured[m])}")
    if rss is not None:
        contender.peak_rss_mb.append(rss)


def paired_ratios(
    agent_rounds: dict[str, list[dict[str, float]]],
    raw_rounds: dict[str, list[dict[str, float]]],
) -> dict[str, dict[str, float]]:
    """Per model, the median over rounds of agent/raw measured in the same round."""
    out: dict[str, dict[str, float]] = {}
    for m in MODEL_NAMES:
        pairs = list(zip(agent_rounds[m], raw_rounds[m], strict=False))
        if pairs:
            out[m] = {
                "p50_over_raw": _median([a["p50_ms"] / r["p50_ms"] for a, r in pairs]),
                "throughput_over_raw": _median(
                    [a["throughput_rps"] / r["throughput_rps"] for a, r in pairs]
                ),
            }
    return out


# --------------------------------------------------------------------------------------------
# Ratios against targets


@dataclass(frozen=True)
class Target:
    key: str
    description: str
    numerator: tuple[str, str, str]  # server, model, metric
    denominator: tuple[str, str, str]
    bound: float | None
    higher_is_better: bool
    goal: float | None = None
    paired: str | None = None  # agent.paired_ratios[model][name] when available


TARGETS = (
    Target(
        "cnn_p50_agent_over_raw",
        "CNN batch-1 p50: agent / raw",
        ("agent", "cnn", "p50_ms"),
        ("raw", "cnn", "p50_ms"),
        1.15,
        higher_is_better=False,
        goal=1.10,
        paired="p50_over_raw",
    ),
    Target(
        "cnn_throughput_agent_over_raw",
        "CNN 8-client throughput: agent / raw",
        ("agent", "cnn", "throughput_rps"),
        ("raw", "cnn", "throughput_rps"),
        0.95,
        higher_is_better=True,
        paired="throughput_over_raw",
    ),
    Target(
        "mlp_throughput_agent_over_kserve_tuned",
        "MLP 8-client throughput: agent / KServe tuned",
        ("agent", "mlp", "throughput_rps"),
        ("kserve_tuned", "mlp", "throughput_rps"),
        1.5,
        higher_is_better=True,
    ),
    Target(
        "mlp_p50_agent_over_kserve_tuned",
        "MLP batch-1 p50: agent / KServe tuned",
        ("agent", "mlp", "p50_ms"),
        ("kserve_tuned", "mlp", "p50_ms"),
        None,
        higher_is_better=False,
    ),
    Target(
        "mlp_throughput_agent_over_mlserver_tuned",
        "MLP 8-client throughput: agent / MLServer tuned",
        ("agent", "mlp", "throughput_rps"),
        ("mlserver_tuned", "mlp", "throughput_rps"),
        None,
        higher_is_better=True,
    ),
    Target(
        "cnn_throughput_agent_over_kserve_tuned",
        "CNN 8-client throughput: agent / KServe tuned",
        ("agent", "cnn", "throughput_rps"),
        ("kserve_tuned", "cnn", "throughput_rps"),
        None,
        higher_is_better=True,
    ),
)


def _figure(servers: dict[str, Any], ref: tuple[str, str, str]) -> float | None:
    server, model, metric = ref
    entry = servers.get(server, {})
    if entry.get("status") != "ok":
        return None
    return float(entry[model][metric])


def compute_ratios(servers: dict[str, Any]) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for t in TARGETS:
        num, den = _figure(servers, t.numerator), _figure(servers, t.denominator)
        if num is None or den is None or den == 0:
            missing = t.numerator[0] if num is None else t.denominator[0]
            ratios[t.key] = {"description": t.description, "value": None, "missing": missing}
            continue
        value = num / den
        method = "ratio of medians"
        paired = servers.get("agent", {}).get("paired_ratios", {})
        if t.paired and t.numerator[1] in paired:
            value = float(paired[t.numerator[1]][t.paired])
            method = "median of per-round paired ratios"
        entry: dict[str, Any] = {"description": t.description, "value": value, "method": method}
        if t.bound is not None:
            entry["target"] = f"{'>=' if t.higher_is_better else '<='} {t.bound}"
            entry["met"] = value >= t.bound if t.higher_is_better else value <= t.bound
        if t.goal is not None:
            entry["goal"] = t.goal
            entry["goal_met"] = value >= t.goal if t.higher_is_better else value <= t.goal
        ratios[t.key] = entry
    return ratios


# --------------------------------------------------------------------------------------------
# Entry points


def machine_load(servers: dict[str, Any], load_start: list[float]) -> dict[str, Any]:
    """CPU count and the 1-minute load average seen during the run: on a machine shared with
    other jobs a load above the core count means every figure is contended (slower and
    noisier, ratios included), so the run says so rather than hiding it."""
    cpus = os.cpu_count() or 1
    seen = [load_start[0], os.getloadavg()[0]]
    for entry in servers.values():
        for m in MODEL_NAMES:
            seen += [r["loadavg_1m"] for r in entry.get(m, {}).get("rounds", [])]
    return {
        "cpus": cpus,
        "platform": platform.platform(),
        "loadavg_1m_max": max(seen),
        "loadavg_1m_median": _median(seen),
        "contended": _median(seen) > cpus,
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("onnxruntime", "grpcio", "tritonclient", "numpy", "onnx", "hatswarm-agent"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def run(
    quick: bool = False,
    *,
    peers: bool = True,
    agent_args: Sequence[str] = (),
    models_dir: Path = MODELS_DIR,
) -> dict[str, object]:
    """Run the node-agent benchmark; return JSON-able results (``quick``: 1 short round).

    Rounds are the outer loop and servers the inner one (each started, warmed up, measured
    and stopped in turn, in an order that rotates every round), so slow drift in the machine's
    load (other jobs on these shared cores) spreads over every server instead of biasing one.
    """
    plan = QUICK if quick else FULL
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        # Turn SIGTERM into SystemExit so the finally blocks stop every server we started.
        previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    load_start = list(os.getloadavg())
    try:
        log(f"building models in {models_dir}")
        paths: dict[str, Path] = models.build_models(models_dir).as_dict()
        work = workloads()
        raw = RawTarget(paths)
        servers: dict[str, Any] = {}

        contenders: list[Contender] = []
        agent_reason = agent_unavailable()
        agent = Contender(
            "agent",
            "hatswarm-agent",
            lambda: agent_spec(paths, agent_args),
            version=_versions()["hatswarm-agent"],
        )
        if agent_reason:
            log(f"agent skipped: {agent_reason}")
            servers["agent"] = {"status": "skipped", "reason": agent_reason}
        else:
            contenders.append(agent)

        peer_specs: list[tuple[PeerEnv, Callable[[Path, bool], ServerSpec]]] = [
            (KSERVE_ENV, lambda py, tuned: kserve_spec(py, paths, tuned)),
            (MLSERVER_ENV, lambda py, tuned: mlserver_spec(py, paths, tuned)),
        ]
        for peer, build_spec in peer_specs:
            keys = [f"{peer.name}_default", f"{peer.name}_tuned"]
            if not peers:
                for key in keys:
                    servers[key] = {"status": "skipped", "reason": "peers disabled"}
                continue
            python, version = ensure_peer_env(peer)
            if python is None:
                log(f"{peer.name} skipped: {version}")
                for key in keys:
                    servers[key] = {"status": "skipped", "reason": version}
                continue
            for key, tuned in zip(keys, (False, True), strict=True):
                contenders.append(
                    Contender(
                        key,
                        SERVER_LABELS[key],
                        functools.partial(build_spec, python, tuned),
                        version=version,
                    )
                )

        raw_rounds: dict[str, list[dict[str, float]]] = {m: [] for m in MODEL_NAMES}
        for index in range(plan.rounds):
            shift = index % max(1, len(contenders))
            for contender in contenders[shift:] + contenders[:shift]:
                if contender.failure is not None:
                    continue
                is_agent = contender is agent
                bench_round(contender, raw, plan, work, index, raw_rounds if is_agent else None)
            if len(raw_rounds["cnn"]) <= index:  # the agent did not run this round
                _measure_raw(raw, work, plan, raw_rounds, index)

        servers["raw"] = {"status": "ok", **{m: _summarise(raw_rounds[m]) for m in MODEL_NAMES}}
        for contender in contenders:
            servers[contender.key] = contender.result()
        if servers.get("agent", {}).get("status") == "ok":
            servers["agent"]["argv_extra"] = list(agent_args)
            servers["agent"]["paired_ratios"] = paired_ratios(agent.rounds, raw_rounds)
        return {
            "benchmark": "node-agent",
            "quick": quick,
            "plan": {
                "rounds": plan.rounds,
                "latency_s": plan.latency_s,
                "throughput_s": plan.throughput_s,
                "warmup_s": plan.warmup_s,
                "clients": CLIENTS,
            },
            "machine": machine_load(servers, load_start),
            "versions": _versions(),
            "models": {
                name: {"path": str(path), "bytes": path.stat().st_size}
                for name, path in paths.items()
            },
            "servers": {k: servers[k] for k in SERVER_LABELS if k in servers},
            "ratios": compute_ratios(servers),
            "duration_s": time.time() - started,
        }
    finally:
        _stop_all()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


SERVER_LABELS = {
    "raw": "raw onnxruntime (in-process)",
    "agent": "hatswarm-agent",
    "kserve_default": "KServe default",
    "kserve_tuned": "KServe tuned",
    "mlserver_default": "MLServer default",
    "mlserver_tuned": "MLServer tuned",
}


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"{'server':<30} {'CNN p50 ms':>10} {'CNN req/s':>10} {'MLP p50 ms':>10} "
        f"{'MLP req/s':>10} {'peak RSS MiB':>12}",
    ]
    for key, label in SERVER_LABELS.items():
        entry = results["servers"].get(key, {})
        if entry.get("status") != "ok":
            reason = str(entry.get("reason", "not run")).splitlines()[0][:70]
            lines.append(f"{label:<30} {entry.get('status', 'not run')}: {reason}")
            continue
        rss = entry.get("peak_rss_mb")
        lines.append(
            f"{label:<30} {entry['cnn']['p50_ms']:>10.2f} {entry['cnn']['throughput_rps']:>10.0f} "
            f"{entry['mlp']['p50_ms']:>10.3f} {entry['mlp']['throughput_rps']:>10.0f} "
            f"{(f'{rss:.0f}' if rss else '-'):>12}"
        )
    machine = results.get("machine", {})
    if machine.get("contended"):
        lines.append(
            f"WARNING: median load average {machine['loadavg_1m_median']:.1f} "
            f"(max {machine['loadavg_1m_max']:.1f}) on {machine['cpus']} cores: other jobs "
            "competed for the CPU, figures are contended and noisy; rerun on a quiet machine"
        )
    for key, label in SERVER_LABELS.items():
        match = results["servers"].get(key, {}).get("outputs_match_raw", {})
        wrong = [m for m, ok in match.items() if not ok]
        if wrong:
            lines.append(f"WARNING: {label} outputs differ from raw onnxruntime for {wrong}")
    lines.append("")
    for entry in results["ratios"].values():
        if entry["value"] is None:
            lines.append(f"{entry['description']:<48} n/a ({entry['missing']} not measured)")
            continue
        verdict = ""
        if "met" in entry:
            verdict = f"target {entry['target']}: {'met' if entry['met'] else 'MISSED'}"
        if "goal" in entry:
            verdict += f", goal {entry['goal']}: {'met' if entry['goal_met'] else 'missed'}"
        lines.append(f"{entry['description']:<48} {entry['value']:6.2f}  {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hatswarm node-agent benchmark")
    parser.add_argument("--quick", action="store_true", help="1 short round (smoke test)")
    parser.add_argument("--skip-peers", action="store_true", help="agent and raw only")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        help="extra hatswarm-agent argument (repeatable), e.g. --agent-arg=--max-batch-size=8",
    )
    args = parser.parse_args(argv)
    results = run(args.quick, peers=not args.skip_peers, agent_args=args.agent_arg)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
