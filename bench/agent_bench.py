"""Node-agent benchmark (issues #3, #18): the hatswarm agent against raw onnxruntime, a
do-nothing OIP server, KServe and MLServer, measured so that the figures mean something.

Same machine, same run, one server at a time, ``tritonclient.grpc`` as the client of every
server. Five models: the bench CNN (uint8 camera frame), MobileNet v1, the MLP, and two real
models the project's tests do not use (SqueezeNet from ``onnx``, RapidOCR's text-direction
classifier): see ``bench/models.py``. Per model and server: p50 and p99 at 1 client
(sequential, at least ``latency_calls`` calls), req/s at 8 concurrent clients; per server, RSS
with no models and after the run with every model.

How the figures are kept honest:

- **Paired baselines.** Raw ``session.run`` (in this process; p50 the faster of 1 and 2
  intra-op threads, throughput the better of 8 threads on a 1-thread session and sequential
  2-thread runs) is measured immediately before and after each server's block on each model,
  so every ratio compares figures taken seconds apart, not minutes; a pair whose two sides
  differ by more than 10% is flagged unstable.
- **Contention told apart.** ``bench/contention.py`` splits the machine's CPU time during every
  block into this benchmark's process tree (client threads, the server) and everything else; a
  block where others used more than 0.2 of a core is flagged, the heaviest outside processes
  are named, and the README table marks each figure measured under outside load.
- **Best peers.** KServe and MLServer run in their default and their tuned forms; the table
  shows, per model and metric, the better of the two (which one is recorded).
- **The floor.** ``bench/peers/floor_server.py``: grpc.aio on the same proto, answering zeros
  of the right shape without computing, measured in the same rounds: no Python gRPC server can
  beat it, so it says how much of any gap is transport.
- **Reproduction.** Rounds are the outer loop (servers in a rotating order inside each); each
  figure is the median over rounds (p99: over the pooled samples) and its spread over rounds
  is reported; one whose rounds differ by more than 10% is marked as not reproduced.

The agent is measured three ways from one process: over TCP (``agent``), over its unix socket
(``agent_uds``), and with Triton's system shared memory for inputs and outputs over the unix
socket (``agent_shm``, each client writing its frame into its region every call).

Peers run in their own cached venvs under bench/out/venvs/ (created on first use, progress
shown live). A peer that cannot be installed or started is recorded as skipped with the reason;
the benchmark never fails for it. Every process started is stopped on exit.

    uv run --frozen python bench/agent_bench.py [--quick] [--rounds N] [--json PATH]
        [--skip-peers] [--models cnn,mlp] [--agent-arg=--option=...]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
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
MODEL_ORDER = ("cnn", "mobilenet", "mlp", "squeezenet", "ocr_cls")
MODEL_LABELS = {
    "cnn": "CNN",
    "mobilenet": "MobileNet v1",
    "mlp": "MLP",
    "squeezenet": "SqueezeNet",
    "ocr_cls": "OCR cls",
}
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "cnn": (1, 224, 224, 3),
    "mobilenet": (1, 224, 224, 3),
    "mlp": (1, 16),
    "squeezenet": (1, 3, 224, 224),
    "ocr_cls": (1, 3, 48, 192),
}
ONNX_TO_OIP = {"tensor(float)": "FP32", "tensor(uint8)": "UINT8", "tensor(int64)": "INT64"}
UNSTABLE_PAIR = 0.10  # raw before/after a block differing by more: the pair is unstable
REPRODUCED = 0.10  # a figure whose rounds spread wider than this did not reproduce
IDLE_BEFORE_RSS_S = 2.0  # a server's memory "after the run" is read this long after its last call


def _load_sibling(name: str, filename: str) -> ModuleType:
    """bench/ is not a package (bench/run.py imports this file): load a module beside it."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / filename)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


models = _load_sibling("hatswarm_bench_models", "models.py")
contention = _load_sibling("hatswarm_bench_contention", "contention.py")


# --------------------------------------------------------------------------------------------
# Plan and workloads


@dataclass(frozen=True)
class Plan:
    """How much each measurement runs."""

    rounds: int
    latency_calls: int  # sequential calls per 1-client block, at least
    latency_min_s: float  # and at least this long
    raw_calls: int  # per thread count, per side of a raw pair
    throughput_s: float
    warmup_s: float


QUICK = Plan(
    rounds=1, latency_calls=20, latency_min_s=0.2, raw_calls=8, throughput_s=0.5, warmup_s=0.2
)
FULL = Plan(
    rounds=3, latency_calls=400, latency_min_s=2.0, raw_calls=80, throughput_s=2.5, warmup_s=1.0
)


@dataclass(frozen=True)
class Workload:
    """One model's request: its inputs (name, OIP datatype, batch-1 data) and its output."""

    model: str
    inputs: tuple[tuple[str, str, np.ndarray], ...]
    output: str
    output_datatype: str
    output_shape: tuple[int, ...]

    @property
    def feeds(self) -> dict[str, np.ndarray]:
        return {name: data for name, _, data in self.inputs}


def workloads(paths: dict[str, Path]) -> dict[str, Workload]:
    """Batch-1 requests for every model, shaped and typed from the model itself."""
    out: dict[str, Workload] = {}
    for name, path in paths.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = []
        for i, arg in enumerate(session.get_inputs()):
            datatype = ONNX_TO_OIP[arg.type]
            shape = INPUT_SHAPES[name]
            rng = np.random.default_rng(i)
            if datatype == "UINT8":
                data: np.ndarray = rng.integers(0, 256, size=shape, dtype=np.uint8)
            else:
                data = rng.random(shape, dtype=np.float32)
            inputs.append((arg.name, datatype, data))
        first = session.get_outputs()[0]
        value = session.run([first.name], {n: d for n, _, d in inputs})[0]
        out[name] = Workload(
            name, tuple(inputs), first.name, ONNX_TO_OIP[first.type], tuple(value.shape)
        )
    return out


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


def measure_latency(call: Caller, calls: int, min_s: float, max_s: float = 60.0) -> list[float]:
    """Sequential calls, at least `calls` of them and `min_s` long: latencies in ms."""
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < calls or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start > max_s and len(samples) >= 20:
            break
    return samples


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    q = np.percentile(np.asarray(samples), [50, 90, 99])
    return {"p50_ms": float(q[0]), "p90_ms": float(q[1]), "p99_ms": float(q[2])}


@dataclass
class Throughput:
    """One closed-loop block: completed requests over the clients' window and, with a server
    pid, the CPU its process tree spent in that window."""

    requests: int
    seconds: float
    server_cpu_s: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def server_cpu_ms_per_request(self) -> float | None:
        if self.server_cpu_s is None or not self.requests:
            return None
        return self.server_cpu_s / self.requests * 1e3


def measure_throughput(make_caller: Callable[[], Caller], clients: int, seconds: float) -> float:
    """``clients`` threads, each with its own client, calling back to back: completed req/s."""
    return run_clients(make_caller, clients, seconds).rps


def run_clients(
    make_caller: Callable[[], Caller], clients: int, seconds: float, server_pid: int | None = None
) -> Throughput:
    """`measure_throughput`, with the server's CPU time per request when `server_pid` is given:
    the work a request costs the server, beside how soon the host ran it (it moves with the
    host's phase too: CNN 13.5 then 14.9 ms in two runs on 2026-12-02)."""
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
        cpu_start = contention.tree_cpu_seconds(server_pid) if server_pid else None
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        cpu_end = contention.tree_cpu_seconds(server_pid) if server_pid else None
    finally:
        stop.set()
        for caller in callers:
            caller.close()
    if errors:
        first = errors[0]
        raise RuntimeError(
            f"{len(errors)} client(s) failed: {type(first).__name__}: {first}"
        ) from first
    cpu = cpu_end - cpu_start if cpu_start is not None and cpu_end is not None else None
    return Throughput(sum(counts), elapsed, cpu)


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
                options.log_severity_level = 3
                self.sessions[(name, threads)] = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )

    def caller(self, work: Workload, threads: int) -> Caller:
        session = self.sessions[(work.model, threads)]
        feeds = work.feeds

        def run() -> np.ndarray:
            return np.asarray(session.run([work.output], feeds)[0])

        return _FnCaller(run)


_SHM_SEQ = itertools.count()


class OipTarget:
    """A server speaking the Open Inference Protocol over gRPC, driven by tritonclient."""

    def __init__(self, url: str) -> None:
        self.url = url

    def caller(self, work: Workload) -> Caller:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        inputs = []
        for name, datatype, data in work.inputs:
            tensor = grpcclient.InferInput(name, list(data.shape), datatype)
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)

        def infer() -> np.ndarray:
            result = client.infer(work.model, inputs, client_timeout=INFER_TIMEOUT_S)
            return np.asarray(result.as_numpy(work.output))

        return _FnCaller(infer, client.close)

    def shm_caller(self, work: Workload) -> Caller:
        """Inputs and output in system shared memory regions of this client's own; every call
        writes the frame into its region first, as an application with a new frame would."""
        import tritonclient.grpc as grpcclient
        import tritonclient.utils.shared_memory as shm

        client = grpcclient.InferenceServerClient(self.url)
        tag = f"hsb{os.getpid()}-{next(_SHM_SEQ)}"
        handles: list[tuple[str, Any]] = []
        try:
            inputs, writes = [], []
            for i, (name, datatype, data) in enumerate(work.inputs):
                region = f"{tag}-in{i}"
                handle = shm.create_shared_memory_region(region, "/" + region, data.nbytes)
                handles.append((region, handle))
                client.register_system_shared_memory(region, "/" + region, data.nbytes)
                tensor = grpcclient.InferInput(name, list(data.shape), datatype)
                tensor.set_shared_memory(region, data.nbytes)
                inputs.append(tensor)
                writes.append((handle, data))
            out_bytes = (
                math.prod(work.output_shape) * np.dtype(_NUMPY[work.output_datatype]).itemsize
            )
            region = f"{tag}-out"
            out_handle = shm.create_shared_memory_region(region, "/" + region, out_bytes)
            handles.append((region, out_handle))
            client.register_system_shared_memory(region, "/" + region, out_bytes)
            requested = grpcclient.InferRequestedOutput(work.output)
            requested.set_shared_memory(region, out_bytes)
        except BaseException:
            _release_shm(client, handles)
            raise

        def infer() -> np.ndarray:
            for handle, data in writes:
                shm.set_shared_memory_region(handle, [data])
            result = client.infer(
                work.model, inputs, outputs=[requested], client_timeout=INFER_TIMEOUT_S
            )
            output = result.get_output(work.output)
            return np.array(
                shm.get_contents_as_numpy(out_handle, _NUMPY[output.datatype], output.shape)
            )

        return _FnCaller(infer, lambda: _release_shm(client, handles))

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


_NUMPY = {"FP32": np.float32, "UINT8": np.uint8, "INT64": np.int64}


def _release_shm(client: Any, handles: list[tuple[str, Any]]) -> None:
    import tritonclient.utils.shared_memory as shm

    for region, handle in handles:
        with contextlib.suppress(Exception):
            client.unregister_system_shared_memory(region)
        with contextlib.suppress(Exception):
            shm.destroy_shared_memory_region(handle)
    client.close()


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
    models: tuple[str, ...] = ()  # ready means these are ready
    extra: dict[str, str] = field(default_factory=dict)  # e.g. the agent's unix socket


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
        while not target.ready(spec.models):
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


def _descendants(pid: int) -> list[int]:
    pids, pending = [pid], [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                pids += kids
                pending += kids
    return pids


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process and its descendants, in MiB: now (VmRSS), peak (VmHWM)
    and proportional (Pss: shared pages split between the processes that map them)."""
    totals = {"rss_mb": 0, "peak_rss_mb": 0, "pss_mb": 0}
    fields = {"VmRSS:": "rss_mb", "VmHWM:": "peak_rss_mb"}
    for one in _descendants(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                key = fields.get(line.split(":", 1)[0] + ":")
                if key:
                    totals[key] += int(line.split()[1])
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{one}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    totals["pss_mb"] += int(line.split()[1])
    return {k: round(v / 1024, 1) for k, v in totals.items()}


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
    argv = [exe, "--host", HOST, "--port", str(port), "--metrics-port", str(free_port())]
    for name, path in paths.items():
        argv += ["--model", f"{name}={path}"]
    help_text = _agent_help(exe)
    if "--state-dir" in help_text:
        state = OUT_DIR / "agent-state"  # fresh each start: no assignment carried over
        shutil.rmtree(state, ignore_errors=True)
        argv += ["--state-dir", str(state)]
    extra: dict[str, str] = {"metrics": f"{HOST}:{argv[argv.index('--metrics-port') + 1]}"}
    if "--uds" in help_text:
        uds = Path(tempfile.gettempdir()) / f"hatswarm-bench-{os.getpid()}.sock"
        with contextlib.suppress(FileNotFoundError):
            uds.unlink()
        argv += ["--uds", str(uds)]
        extra["uds"] = f"unix:{uds}"
    return ServerSpec(
        "agent",
        "hatswarm-agent",
        [*argv, *extra_args],
        port,
        ready_timeout_s=120,
        models=tuple(paths),
        extra=extra,
    )


def floor_spec(work: dict[str, Workload], holds: dict[str, float] | None = None) -> ServerSpec:
    """The do-nothing server; with `holds` (seconds per model) each reply waits that long."""
    port = free_port()
    argv = [sys.executable, str(PEERS_DIR / "floor_server.py"), "--port", str(port)]
    for name, w in work.items():
        shape = "x".join(str(d) for d in w.output_shape)
        argv += ["--output", f"{name}={w.output}:{w.output_datatype}:{shape}"]
        if holds and name in holds:
            argv += ["--hold", f"{name}={holds[name]:.6f}"]
    key = "floor_held" if holds else "floor"
    extra = {f"hold_ms.{m}": f"{1000 * s:.4f}" for m, s in (holds or {}).items()}
    return ServerSpec(
        key, SERVER_LABELS[key], argv, port, ready_timeout_s=60, models=tuple(work), extra=extra
    )


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
    return ServerSpec(key, label, argv, port, ready_timeout_s=120, models=tuple(paths))


def mlserver_spec(python: Path, paths: dict[str, Path], tuned: bool) -> ServerSpec:
    key = "mlserver_tuned" if tuned else "mlserver_default"
    repo = OUT_DIR / key
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    for name, path in paths.items():
        (repo / name).mkdir()
        settings_json = mlserver_model_settings(name, path)
        (repo / name / "model-settings.json").write_text(json.dumps(settings_json, indent=2))
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
        models=tuple(paths),
    )


def mlserver_model_settings(name: str, path: Path) -> dict[str, Any]:
    """MLServer's model-settings.json for one model, inputs and outputs from the model itself
    (MLServer's metadata is empty otherwise); dim 0 is -1 (any batch)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def tensors(args: Sequence[Any]) -> list[dict[str, Any]]:
        return [
            {
                "name": a.name,
                "datatype": ONNX_TO_OIP[a.type],
                "shape": [d if isinstance(d, int) and d > 0 else -1 for d in a.shape],
            }
            for a in args
        ]

    return {
        "name": name,
        "implementation": "onnx_runtime.OnnxRuntimeModel",
        "inputs": tensors(session.get_inputs()),
        "outputs": tensors(session.get_outputs()),
        "parameters": {"uri": str(path)},
    }


# --------------------------------------------------------------------------------------------
# Measurement


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _spread(values: Sequence[float]) -> float | None:
    """(max - min) / median over rounds; None with a single round (nothing to compare)."""
    if len(values) < 2:
        return None
    mid = _median(values)
    return (max(values) - min(values)) / mid if mid else None


@dataclass(frozen=True)
class View:
    """One way of reaching a server: a row of the table."""

    row: str
    label: str
    address: Callable[[ServerSpec], str | None]  # None: this server has no such door
    shm: bool = False


def _tcp(spec: ServerSpec) -> str:
    return f"{HOST}:{spec.grpc_port}"


def _uds(spec: ServerSpec) -> str | None:
    return spec.extra.get("uds")


@dataclass
class Contender:
    """A server process under test, the views of it that are measured, what they measured."""

    key: str
    label: str
    make_spec: Callable[[dict[str, Path]], ServerSpec]
    views: tuple[View, ...]
    version: str = ""
    raw_throughput: bool = False  # pair raw throughput around its blocks too (the agent)
    check_outputs: bool = True  # the floor answers zeros: nothing to compare
    failure: str | None = None
    startup_s: list[float] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    outputs_match_raw: dict[str, dict[str, bool]] = field(default_factory=dict)
    skipped_views: dict[str, str] = field(default_factory=dict)


def raw_side(
    raw: RawTarget, work: Workload, plan: Plan, throughput: bool, meter: Any
) -> dict[str, Any]:
    """Raw onnxruntime on one model right now: p50 the faster thread count, and throughput."""
    with meter.block() as block:
        samples = {t: measure_latency(raw.caller(work, t), plan.raw_calls, 0.0) for t in (1, 2)}
        lat = {t: percentiles(s) for t, s in samples.items()}
        best = min(lat, key=lambda t: lat[t]["p50_ms"])
        out: dict[str, Any] = {
            "p50_ms": lat[best]["p50_ms"],
            "p99_ms": lat[best]["p99_ms"],
            "mean_ms": float(np.mean(samples[best])),
            "threads": best,
            "p50_ms_1_thread": lat[1]["p50_ms"],
            "p50_ms_2_threads": lat[2]["p50_ms"],
        }
        if throughput:
            concurrent = measure_throughput(lambda: raw.caller(work, 1), CLIENTS, plan.throughput_s)
            sequential = measure_throughput(lambda: raw.caller(work, 2), 1, plan.throughput_s)
            out["throughput_rps"] = max(concurrent, sequential)
    out["contention"] = block.result
    return out


def raw_holds(
    raw: RawTarget, work: dict[str, Workload], plan: Plan, meter: Any
) -> dict[str, float]:
    """Each model's raw lone run time (seconds, the faster thread count's p50), measured just
    before the held floor starts for a round: how long it waits before answering."""
    holds = {m: raw_side(raw, w, plan, False, meter)["p50_ms"] / 1000 for m, w in work.items()}
    log("held floor waits " + ", ".join(f"{m} {s * 1000:.2f} ms" for m, s in holds.items()))
    return holds


def raw_pair(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The baseline for the block between two raw sides: their mean, flagged when they differ."""
    pair: dict[str, Any] = {"before": before, "after": after}
    if "mean_ms" in before and "mean_ms" in after:  # for the agent's breakdown, not the flag
        pair["mean_ms"] = (before["mean_ms"] + after["mean_ms"]) / 2
    for key in ("p50_ms", "throughput_rps"):
        if key in before and key in after:
            a, b = before[key], after[key]
            pair[key] = (a + b) / 2
            pair[f"{key}_drift"] = abs(a - b) / ((a + b) / 2)
    pair["unstable"] = any(v > UNSTABLE_PAIR for k, v in pair.items() if k.endswith("_drift"))
    return pair


def measure_view(
    target: OipTarget,
    view: View,
    work: Workload,
    plan: Plan,
    meter: Any,
    metrics: str | None = None,
    server_pid: int | None = None,
) -> dict[str, Any]:
    make = target.shm_caller if view.shm else target.caller
    caller = make(work)
    before = _scrape_durations(metrics, work.model)
    try:
        with meter.block() as lat_block:
            samples = measure_latency(caller, plan.latency_calls, plan.latency_min_s)
    finally:
        caller.close()
    server = _server_means(before, _scrape_durations(metrics, work.model))
    with meter.block() as thr_block:
        load = run_clients(lambda: make(work), CLIENTS, plan.throughput_s, server_pid)
    cpu = load.server_cpu_ms_per_request
    return {
        **percentiles(samples),
        "mean_ms": float(np.mean(samples)),
        "calls": len(samples),
        "samples": samples,  # pooled for p99 over rounds, dropped from the JSON
        "throughput_rps": load.rps,
        **({"server_cpu_ms_per_request": cpu} if cpu is not None else {}),
        "contention": {"latency": lat_block.result, "throughput": thr_block.result},
        **server,
    }


DURATIONS = {
    "compute": "hatswarm_inference_compute_duration_seconds",
    "handler": "hatswarm_inference_request_duration_seconds",
}


def _scrape_durations(address: str | None, model: str) -> dict[str, tuple[float, float]]:
    """The agent's cumulative (seconds, count) per duration histogram for `model`, from its
    /metrics (the agent's own view of the same requests the client timed); {} without one."""
    text = _metrics_text(address)
    out: dict[str, tuple[float, float]] = {}
    for key, name in DURATIONS.items():
        found: dict[str, float] = {}
        for suffix in ("sum", "count"):
            pattern = rf'^{name}_{suffix}{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$'
            match = re.search(pattern, text, re.M)
            if match:
                found[suffix] = float(match.group(1))
        if len(found) == 2:
            out[key] = (found["sum"], found["count"])
    return out


def _server_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Mean ms per request the agent measured between two scrapes: the model's run alone
    (`server_compute_mean_ms`) and its whole handler (`server_handler_mean_ms`). The client's
    mean minus the handler's is the transport; the handler's minus the compute, the agent's own
    work around the model; the compute against raw's, the session in the agent's process."""
    out: dict[str, float] = {}
    for key in DURATIONS:
        if key in before and key in after and after[key][1] > before[key][1]:
            seconds = after[key][0] - before[key][0]
            out[f"server_{key}_mean_ms"] = 1000 * seconds / (after[key][1] - before[key][1])
    return out


def _check_outputs(caller: Caller, raw: RawTarget, work: Workload) -> bool:
    try:
        got = caller()
    finally:
        caller.close()
    want = raw.caller(work, 1)()
    return bool(got.shape == want.shape and np.allclose(got, want, rtol=1e-3, atol=1e-4))


def _metrics_text(address: str | None) -> str:
    """The agent's /metrics page, or "" when it has none or does not answer."""
    if not address:
        return ""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


def _scrape_model_memory(address: str | None) -> dict[str, float]:
    """The agent's per-model, per-session memory gauge (bytes -> MiB), when it exports one."""
    text = _metrics_text(address)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("hatswarm_model_memory_bytes{"):
            labels, _, value = line.rpartition(" ")
            names = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            key = f"{names.get('model', '?')}/{names.get('session', '?')}"
            out[key] = round(float(value) / (1 << 20), 1)
    return out


def memory_without_models(contender: Contender) -> None:
    """RSS of the server with nothing loaded: what it costs before the first model."""
    try:
        spec = contender.make_spec({})
        with serving(spec) as proc:
            time.sleep(2.0)
            contender.memory["no_models"] = memory_mb(proc.pid)
    except Exception as exc:
        contender.memory["no_models"] = {"error": f"{type(exc).__name__}: {exc}"}
    log(f"{contender.label} with no models: {contender.memory['no_models']}")


def bench_round(
    contender: Contender,
    raw: RawTarget,
    paths: dict[str, Path],
    work: dict[str, Workload],
    plan: Plan,
    index: int,
    rows: dict[str, dict[str, list[dict[str, Any]]]],
    meter: Any,
) -> None:
    """One round of one server: start it, warm up, measure every model (raw pairs around each
    model's blocks), record its memory, stop it."""
    log(f"round {index + 1}/{plan.rounds}: starting {contender.label}")
    t0 = time.monotonic()
    measured: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        spec = contender.make_spec(paths)
        with serving(spec) as proc:
            contender.startup_s.append(time.monotonic() - t0)
            views = []
            for view in contender.views:
                address = view.address(spec)
                if address is None:
                    contender.skipped_views[view.row] = "the server has no such door"
                    continue
                views.append((view, OipTarget(address)))
            for view, target in views:
                if view.row in contender.outputs_match_raw or not contender.check_outputs:
                    continue
                make = target.shm_caller if view.shm else target.caller
                try:
                    contender.outputs_match_raw[view.row] = {
                        m: _check_outputs(make(work[m]), raw, work[m]) for m in work
                    }
                except Exception as exc:
                    contender.skipped_views[view.row] = f"{type(exc).__name__}: {exc}"
            views = [(v, t) for v, t in views if v.row not in contender.skipped_views]
            for m in work:
                for _, target in views:
                    warm_up(functools.partial(target.caller, work[m]), plan.warmup_s)
            for m in work:
                before = raw_side(raw, work[m], plan, contender.raw_throughput, meter)
                for view, target in views:
                    measured.setdefault(view.row, {})[m] = measure_view(
                        target, view, work[m], plan, meter, spec.extra.get("metrics"), proc.pid
                    )
                    if f"hold_ms.{m}" in spec.extra:  # the held floor: what it waited
                        measured[view.row][m]["hold_ms"] = float(spec.extra[f"hold_ms.{m}"])
                pair = raw_pair(
                    before, raw_side(raw, work[m], plan, contender.raw_throughput, meter)
                )
                for view, _ in views:
                    measured[view.row][m]["raw"] = pair
            time.sleep(IDLE_BEFORE_RSS_S)  # every server gets the same idle time to settle
            contender.memory.setdefault("after_rounds", []).append(memory_mb(proc.pid))
            per_model = _scrape_model_memory(spec.extra.get("metrics"))
            if per_model:
                contender.memory["per_model_session"] = per_model
    except Exception as exc:
        contender.failure = f"{type(exc).__name__}: {exc}"
        log(f"{contender.label} failed: {contender.failure}")
        return
    for row, per_model in measured.items():
        for m, result in per_model.items():
            rows.setdefault(row, {}).setdefault(m, []).append(result)
            log(
                f"round {index + 1}/{plan.rounds} {row} {m}: p50 {result['p50_ms']:.2f} ms "
                f"(raw {result['raw']['p50_ms']:.2f}), p99 {result['p99_ms']:.2f} ms, "
                f"{result['throughput_rps']:.0f} req/s "
                f"({result['contention']['throughput']['own_cores']:.2f} cores"
                + (
                    f", server CPU {result['server_cpu_ms_per_request']:.2f} ms/req"
                    if "server_cpu_ms_per_request" in result
                    else ""
                )
                + "), outside load "
                f"{result['contention']['latency']['outside_cores']:.2f} cores"
                + (
                    f"; means: client {result['mean_ms']:.2f}, handler "
                    f"{result['server_handler_mean_ms']:.2f}, compute "
                    f"{result['server_compute_mean_ms']:.2f} ms (raw "
                    f"{result['raw']['mean_ms']:.2f})"
                    if "server_compute_mean_ms" in result and "mean_ms" in result["raw"]
                    else ""
                )
            )


# --------------------------------------------------------------------------------------------
# Summaries


def summarise_row(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One server x model over the rounds: medians, pooled p99, spread, paired ratios."""
    p50s = [r["p50_ms"] for r in rounds]
    rps = [r["throughput_rps"] for r in rounds]
    pooled = [s for r in rounds for s in r["samples"]]
    p50_ratio = [r["p50_ms"] / r["raw"]["p50_ms"] for r in rounds]
    out: dict[str, Any] = {
        "p50_ms": _median(p50s),
        "p99_ms": float(np.percentile(pooled, 99)),
        "p99_ms_rounds": [r["p99_ms"] for r in rounds],
        "throughput_rps": _median(rps),
        "calls": sum(r["calls"] for r in rounds),
        "p50_spread": _spread(p50s),
        "throughput_spread": _spread(rps),
        "p50_over_raw": _median(p50_ratio),
        "p50_over_raw_rounds": p50_ratio,
        "unstable_raw_pairs": sum(1 for r in rounds if r["raw"]["unstable"]),
        "contention": contention.summarise([b for r in rounds for b in r["contention"].values()]),
    }
    thr_ratio = [
        r["throughput_rps"] / r["raw"]["throughput_rps"]
        for r in rounds
        if r["raw"].get("throughput_rps")
    ]
    if thr_ratio:
        out["throughput_over_raw"] = _median(thr_ratio)
    spreads = [s for s in (out["p50_spread"], out["throughput_spread"]) if s is not None]
    out["reproduced"] = None if not spreads else max(spreads) <= REPRODUCED
    if all("server_compute_mean_ms" in r and "mean_ms" in r["raw"] for r in rounds):
        # Where a lone request's time goes, in means (the agent's histograms give no median):
        # the transport (client - handler), the agent's own work (handler - compute), and the
        # model's run in the agent's process against raw's in this one.
        out["breakdown_mean_ms"] = {
            "client": _median([r["mean_ms"] for r in rounds]),
            "handler": _median([r["server_handler_mean_ms"] for r in rounds]),
            "compute": _median([r["server_compute_mean_ms"] for r in rounds]),
            "raw": _median([r["raw"]["mean_ms"] for r in rounds]),
        }
    # The cores the server and its 8 clients kept busy (of the machine's): below all of them,
    # the server left a core idle while work waited (e.g. on its event loop).
    out["busy_cores_8_clients"] = _median(
        [r["contention"]["throughput"]["own_cores"] for r in rounds]
    )
    cpu = [r["server_cpu_ms_per_request"] for r in rounds if "server_cpu_ms_per_request" in r]
    if cpu and len(cpu) == len(rounds):
        # The server's own CPU per request at 8 clients: the work a request costs it (raw, in
        # this process, has no server). It moves with the host's phase too.
        out["server_cpu_ms_per_request"] = _median(cpu)
        out["server_cpu_spread"] = _spread(cpu)
    if all("hold_ms" in r for r in rounds):
        # The held floor against the raw time it waited (measured just before it started):
        # what answering after that long costs any server here, beyond the wait itself.
        out["p50_over_hold"] = _median([r["p50_ms"] / r["hold_ms"] for r in rounds])
        out["p50_minus_hold_ms"] = _median([r["p50_ms"] - r["hold_ms"] for r in rounds])
    out["rounds"] = [{k: v for k, v in r.items() if k != "samples"} for r in rounds]
    return out


def summarise_raw(rows: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Raw onnxruntime per model over every side measured in the run (throughput: the agent's
    pairs, the only ones that measure it)."""
    out: dict[str, Any] = {}
    models_seen = {m for per_model in rows.values() for m in per_model}
    for m in models_seen:
        sides = [
            side
            for per_model in rows.values()
            for r in per_model.get(m, [])
            for side in (r["raw"]["before"], r["raw"]["after"])
        ]
        unique = {id(s): s for s in sides}.values()
        thr = [s["throughput_rps"] for s in unique if "throughput_rps" in s]
        out[m] = {
            "p50_ms": _median([s["p50_ms"] for s in unique]),
            "p99_ms": _median([s["p99_ms"] for s in unique]),
            "throughput_rps": _median(thr) if thr else None,
            "sides": len(list(unique)),
            "threads_faster": statistics.mode([s["threads"] for s in unique]),
        }
    return out


def best_of(summaries: dict[str, dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Per model and metric, the better of a peer's forms (and which form it was)."""
    out: dict[str, Any] = {}
    present = [k for k in keys if k in summaries]
    if not present:
        return out
    for m in set().union(*(summaries[k].keys() for k in present)):
        have = [k for k in present if m in summaries[k]]
        p50 = min(have, key=lambda k: summaries[k][m]["p50_ms"])
        p99 = min(have, key=lambda k: summaries[k][m]["p99_ms"])
        thr = max(have, key=lambda k: summaries[k][m]["throughput_rps"])
        cpu = {
            k: summaries[k][m]["server_cpu_ms_per_request"]
            for k in have
            if "server_cpu_ms_per_request" in summaries[k][m]
        }
        leanest = min(cpu, key=lambda k: cpu[k]) if cpu else None
        out[m] = {
            "p50_ms": summaries[p50][m]["p50_ms"],
            "p50_from": p50,
            "p99_ms": summaries[p99][m]["p99_ms"],
            "p99_from": p99,
            "throughput_rps": summaries[thr][m]["throughput_rps"],
            "throughput_from": thr,
            **(
                {
                    "server_cpu_ms_per_request": cpu[leanest],
                    "server_cpu_spread": summaries[leanest][m].get("server_cpu_spread"),
                    "server_cpu_from": leanest,
                }
                if leanest is not None
                else {}
            ),
            "contention": {
                "contended_blocks": sum(
                    summaries[k][m]["contention"]["contended_blocks"] for k in have
                )
            },
            "reproduced": all(summaries[k][m]["reproduced"] is not False for k in have),
        }
    return out


@dataclass(frozen=True)
class Target:
    key: str
    description: str
    value: Callable[[dict[str, Any]], float | None]
    bound: float | None  # None: reported beside the targets, not one of them
    higher_is_better: bool = False


def _get(table: dict[str, Any], row: str, model: str, metric: str) -> float | None:
    value = table.get(row, {}).get(model, {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def targets(model_names: Sequence[str]) -> list[Target]:
    """The issue's "done when", one ratio each, from figures of the same run."""
    out: list[Target] = []
    for m in model_names:
        label = MODEL_LABELS[m]
        for metric, word, higher in (
            ("p50_ms", "p50", False),
            ("p99_ms", "p99", False),
            ("throughput_rps", "8-client req/s", True),
        ):
            short = {"p50_ms": "p50", "p99_ms": "p99", "throughput_rps": "throughput"}[metric]
            out.append(
                Target(
                    f"{m}_{short}_agent_over_kserve",
                    f"{label} {word}: agent / KServe best",
                    lambda t, m=m, metric=metric: _ratio(
                        _get(t, "agent", m, metric), _get(t, "kserve", m, metric)
                    ),
                    1.0,
                    higher,
                )
            )
    for m in model_names:
        out.append(
            Target(
                f"{m}_cpu_agent_over_kserve",
                f"{MODEL_LABELS[m]} server CPU per request, 8 clients: agent / KServe best",
                lambda t, m=m: _ratio(
                    _get(t, "agent", m, "server_cpu_ms_per_request"),
                    _get(t, "kserve", m, "server_cpu_ms_per_request"),
                ),
                None,
            )
        )
    if "mobilenet" in model_names:
        out.append(
            Target(
                "mobilenet_p50_agent_over_raw",
                "MobileNet v1 p50: agent / raw (paired)",
                lambda t: _get(t, "agent", "mobilenet", "p50_over_raw"),
                1.15,
            )
        )
        out.append(
            Target(
                "mobilenet_p50_agent_shm_over_raw",
                "MobileNet v1 p50: agent + shared memory / raw (paired)",
                lambda t: _get(t, "agent_shm", "mobilenet", "p50_over_raw"),
                1.05,
            )
        )
        out.append(
            Target(
                "mobilenet_p50_floor_held_over_raw",
                "MobileNet v1 p50: do-nothing server holding raw's time / that time",
                lambda t: _get(t, "floor_held", "mobilenet", "p50_over_hold"),
                None,
            )
        )
        out.append(
            Target(
                "mobilenet_p50_agent_over_floor_held",
                "MobileNet v1 p50: agent / do-nothing server holding raw's time",
                lambda t: _ratio(
                    _get(t, "agent", "mobilenet", "p50_ms"),
                    _get(t, "floor_held", "mobilenet", "p50_ms"),
                ),
                None,
            )
        )
    out.append(
        Target(
            "rss_agent_over_kserve",
            "RSS after the run, every model: agent / KServe",
            lambda t: _ratio(t.get("_rss", {}).get("agent"), t.get("_rss", {}).get("kserve")),
            1.0,
        )
    )
    return out


def compute_ratios(table: dict[str, Any], model_names: Sequence[str]) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for t in targets(model_names):
        value = t.value(table)
        entry: dict[str, Any] = {"description": t.description, "value": value}
        if value is not None and t.bound is not None:
            entry["target"] = f"{'>=' if t.higher_is_better else '<='} {t.bound}"
            entry["met"] = value >= t.bound if t.higher_is_better else value <= t.bound
        ratios[t.key] = entry
    return ratios


# --------------------------------------------------------------------------------------------
# Entry points


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("onnxruntime", "grpcio", "tritonclient", "numpy", "onnx", "hatswarm-agent"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


AGENT_VIEWS = (
    View("agent", "hatswarm-agent (TCP)", _tcp),
    View("agent_uds", "hatswarm-agent (unix socket)", _uds),
    View("agent_shm", "hatswarm-agent (shared memory, unix socket)", _uds, shm=True),
)
SERVER_LABELS = {
    "raw": "raw onnxruntime (in-process)",
    "floor": "do-nothing OIP server",
    "floor_held": "do-nothing OIP server, holding raw's time",
    "agent": "hatswarm-agent",
    "agent_uds": "hatswarm-agent, unix socket",
    "agent_shm": "hatswarm-agent, shared memory",
    "kserve": "KServe 0.21 (best of default, tuned)",
    "mlserver": "MLServer 1.7 (best of default, tuned)",
    "kserve_default": "KServe default",
    "kserve_tuned": "KServe tuned",
    "mlserver_default": "MLServer default",
    "mlserver_tuned": "MLServer tuned",
}
TABLE_ROWS = ("raw", "floor", "floor_held", "agent", "agent_uds", "agent_shm", "kserve", "mlserver")
RSS_OF_ROW = {"agent": "agent", "kserve": "kserve", "mlserver": "mlserver", "floor": "floor"}


def run(
    quick: bool = False,
    *,
    peers: bool = True,
    agent_args: Sequence[str] = (),
    models_dir: Path = MODELS_DIR,
    only_models: Sequence[str] = (),
    rounds: int | None = None,
) -> dict[str, Any]:
    """Run the node-agent benchmark; return JSON-able results (``quick``: 1 short round)."""
    plan = QUICK if quick else FULL
    if rounds:
        plan = Plan(rounds, *list(plan.__dict__.values())[1:])
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        # Turn SIGTERM into SystemExit so the finally blocks stop every server we started.
        previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    meter = contention.CpuMeter()
    whole_run = meter.snapshot()
    try:
        log(f"building models in {models_dir}")
        paths: dict[str, Path] = models.build_models(models_dir).as_dict()
        real, missing = models.real_models(models_dir)
        paths |= real
        paths = {m: paths[m] for m in MODEL_ORDER if m in paths}
        if only_models:
            paths = {m: p for m, p in paths.items() if m in only_models}
        for m, reason in missing.items():
            log(f"model {m} skipped: {reason}")
        work = workloads(paths)
        raw = RawTarget(paths)
        skipped: dict[str, str] = {}
        holds: list[dict[str, float]] = []  # the held floor's waits, one set per round

        def held_floor_spec(p: dict[str, Path]) -> ServerSpec:
            holds.append(raw_holds(raw, work, plan, meter))
            return floor_spec({m: w for m, w in work.items() if m in p}, holds[-1])

        contenders: list[Contender] = [
            Contender(
                "floor",
                SERVER_LABELS["floor"],
                lambda p: floor_spec({m: w for m, w in work.items() if m in p}),
                (View("floor", SERVER_LABELS["floor"], _tcp),),
                check_outputs=False,
            ),
            Contender(
                "floor_held",
                SERVER_LABELS["floor_held"],
                held_floor_spec,
                (View("floor_held", SERVER_LABELS["floor_held"], _tcp),),
                check_outputs=False,
            ),
        ]
        agent_reason = agent_unavailable()
        if agent_reason:
            log(f"agent skipped: {agent_reason}")
            skipped["agent"] = agent_reason
        else:
            contenders.append(
                Contender(
                    "agent",
                    "hatswarm-agent",
                    lambda p: agent_spec(p, agent_args),
                    AGENT_VIEWS,
                    version=_versions()["hatswarm-agent"],
                    raw_throughput=True,
                )
            )
        peer_specs: list[tuple[PeerEnv, Callable[[Path, dict[str, Path], bool], ServerSpec]]] = [
            (KSERVE_ENV, kserve_spec),
            (MLSERVER_ENV, mlserver_spec),
        ]
        for peer, build_spec in peer_specs:
            keys = [f"{peer.name}_default", f"{peer.name}_tuned"]
            if not peers:
                skipped |= dict.fromkeys(keys, "peers disabled")
                continue
            python, version = ensure_peer_env(peer)
            if python is None:
                log(f"{peer.name} skipped: {version}")
                skipped |= dict.fromkeys(keys, version)
                continue
            for key, tuned in zip(keys, (False, True), strict=True):
                contenders.append(
                    Contender(
                        key,
                        SERVER_LABELS[key],
                        functools.partial(build_spec, python, tuned=tuned),
                        (View(key, SERVER_LABELS[key], _tcp),),
                        version=version,
                    )
                )

        for contender in contenders:
            if contender.key != "floor_held":  # the same process as the floor's, at rest
                memory_without_models(contender)
        rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for index in range(plan.rounds):
            shift = index % max(1, len(contenders))
            for contender in contenders[shift:] + contenders[:shift]:
                if contender.failure is None:
                    bench_round(contender, raw, paths, work, plan, index, rows, meter)
        results = assemble(plan, quick, paths, contenders, rows, skipped, meter, whole_run, started)
        results["floor_held_waits_ms"] = [{m: 1000 * h for m, h in r.items()} for r in holds]
        return results
    finally:
        _stop_all()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def assemble(
    plan: Plan,
    quick: bool,
    paths: dict[str, Path],
    contenders: list[Contender],
    rows: dict[str, dict[str, list[dict[str, Any]]]],
    skipped: dict[str, str],
    meter: Any,
    whole_run: Any,
    started: float,
) -> dict[str, Any]:
    summaries = {row: {m: summarise_row(r) for m, r in per.items()} for row, per in rows.items()}
    table: dict[str, Any] = {"raw": summarise_raw(rows), **summaries}
    table["kserve"] = best_of(summaries, ["kserve_default", "kserve_tuned"])
    table["mlserver"] = best_of(summaries, ["mlserver_default", "mlserver_tuned"])
    servers: dict[str, Any] = {}
    for c in contenders:
        entry: dict[str, Any] = {
            "status": "failed" if c.failure else "ok",
            "version": c.version,
            "memory": c.memory,
            "outputs_match_raw": c.outputs_match_raw,
            "startup_s": _median(c.startup_s) if c.startup_s else None,
        }
        if c.failure:
            entry["reason"] = c.failure
        if c.skipped_views:
            entry["skipped_views"] = c.skipped_views
        servers[c.key] = entry
    for key, reason in skipped.items():
        servers[key] = {"status": "skipped", "reason": reason}
    rss: dict[str, float] = {}
    rss_none: dict[str, float] = {}
    for key, entry in servers.items():
        after = entry.get("memory", {}).get("after_rounds")
        none = entry.get("memory", {}).get("no_models", {})
        group = key.split("_")[0]
        if after:
            last = after[-1]["rss_mb"]
            rss[group] = min(rss.get(group, last), last)  # a peer's lighter form
        if isinstance(none.get("rss_mb"), int | float):
            rss_none[group] = min(rss_none.get(group, none["rss_mb"]), none["rss_mb"])
    table["_rss"] = rss
    table["_rss_no_models"] = rss_none
    model_names = list(paths)
    blocks = [
        b
        for per in summaries.values()
        for s in per.values()
        for r in s["rounds"]
        for b in r["contention"].values()
    ]
    machine = {
        "cpus": os.cpu_count() or 1,
        "platform": platform.platform(),
        "whole_run": meter.measure(whole_run),
        "blocks": contention.summarise(blocks),
    }
    machine["contended"] = machine["blocks"]["contended_blocks"] > 0
    return {
        "benchmark": "node-agent",
        "quick": quick,
        "plan": {**plan.__dict__, "clients": CLIENTS},
        "machine": machine,
        "versions": _versions(),
        "models": {
            name: {"path": str(path), "bytes": path.stat().st_size} for name, path in paths.items()
        },
        "servers": servers,
        "table": {k: v for k, v in table.items() if not k.startswith("_")},
        "rss_mb": {"after_run": rss, "no_models": rss_none},
        "ratios": compute_ratios(table, model_names),
        "duration_s": time.time() - started,
    }


# --------------------------------------------------------------------------------------------
# Tables


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    p50, p99, rps = entry.get("p50_ms"), entry.get("p99_ms"), entry.get("throughput_rps")
    text = f"{_ms(p50)} / {_ms(p99)}, {f'{rps:.0f}' if rps else '-'}"
    marks = ""
    if entry.get("contention", {}).get("contended_blocks"):
        marks += "*"
    if entry.get("reproduced") is False:
        marks += "~"
    return text + marks


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def markdown_table(results: dict[str, Any]) -> list[str]:
    """The README's one table: every server, every model, and memory."""
    table = results.get("table", {})
    names = list(results.get("models", {}))
    rss = results.get("rss_mb", {})
    head = (
        "| server | "
        + " | ".join(MODEL_LABELS[m] for m in names)
        + f" | RSS MB, 0 / {len(names)} models |"
    )
    lines = [head, "|---" * (len(names) + 2) + "|"]
    for row in TABLE_ROWS:
        if row not in table or not table[row]:
            reason = results.get("servers", {}).get(row, {}).get("reason")
            if reason:
                lines.append(f"| {SERVER_LABELS[row]} | skipped: {reason[:60]} |")
            continue
        cells = [_cell(table[row].get(m)) for m in names]
        group = RSS_OF_ROW.get(row)
        mem = "-"
        if group and group in rss.get("after_run", {}):
            mem = f"{rss['no_models'].get(group, float('nan')):.0f} / {rss['after_run'][group]:.0f}"
        lines.append(f"| {SERVER_LABELS[row]} | " + " | ".join(cells) + f" | {mem} |")
    lines += cpu_table(results)
    machine = results.get("machine", {})
    blocks = machine.get("blocks", {})
    lines += [
        "",
        "Cells: 1-client p50 / p99 ms, 8-client req/s. `*`: measured while other processes used "
        f"more than {blocks.get('threshold_cores', contention.THRESHOLD_CORES)} of a core "
        "(contended); `~`: rounds differ by more than 10% (not reproduced). "
        f"{blocks.get('contended_blocks', 0)} of {blocks.get('blocks', 0)} blocks contended; "
        f"outside load median {blocks.get('outside_cores_median', 0):.2f}, max "
        f"{blocks.get('outside_cores_max', 0):.2f} cores; load average up to "
        f"{blocks.get('loadavg_1m_max', 0):.1f} on {machine.get('cpus', '?')} cores.",
    ]
    return lines


def cpu_table(results: dict[str, Any]) -> list[str]:
    """The servers' own CPU per request at 8 clients (ms): what a request costs each server."""
    table = results.get("table", {})
    names = list(results.get("models", {}))
    rows = [
        r
        for r in TABLE_ROWS
        if any("server_cpu_ms_per_request" in (table.get(r) or {}).get(m, {}) for m in names)
    ]
    if not rows:
        return []
    lines = [
        "",
        "| server CPU per request, 8 clients, ms | "
        + " | ".join(MODEL_LABELS[m] for m in names)
        + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for row in rows:
        cells = []
        for m in names:
            entry = table[row].get(m, {})
            value = entry.get("server_cpu_ms_per_request")
            spread = entry.get("server_cpu_spread")
            mark = "~" if spread is not None and spread > REPRODUCED else ""
            cells.append("-" if value is None else f"{value:.2f}{mark}")
        lines.append(f"| {SERVER_LABELS[row]} | " + " | ".join(cells) + " |")
    return lines


def format_table(results: dict[str, Any]) -> str:
    lines = markdown_table(results)
    for key in SERVER_LABELS:
        match = results.get("servers", {}).get(key, {}).get("outputs_match_raw", {})
        for row, per_model in match.items():
            wrong = [m for m, ok in per_model.items() if not ok]
            if wrong:
                lines.append(f"WARNING: {row} outputs differ from raw onnxruntime for {wrong}")
    lines.append("")
    for entry in results["ratios"].values():
        if entry["value"] is None:
            lines.append(f"{entry['description']:<58} n/a")
            continue
        verdict = (
            f"target {entry['target']}: {'met' if entry['met'] else 'MISSED'}"
            if "target" in entry
            else "(beside the targets)"
        )
        lines.append(f"{entry['description']:<58} {entry['value']:6.3f}  {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hatswarm node-agent benchmark")
    parser.add_argument("--quick", action="store_true", help="1 short round (smoke test)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 1 quick, 3 full)")
    parser.add_argument("--skip-peers", action="store_true", help="agent, floor and raw only")
    parser.add_argument("--models", default="", help="comma-separated subset of the models")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        help="extra hatswarm-agent argument (repeatable), e.g. --agent-arg=--max-batch-size=8",
    )
    args = parser.parse_args(argv)
    results = run(
        args.quick,
        peers=not args.skip_peers,
        agent_args=args.agent_arg,
        only_models=[m for m in args.models.split(",") if m],
        rounds=args.rounds,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
