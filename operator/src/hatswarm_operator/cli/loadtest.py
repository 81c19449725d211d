"""`hatswarm loadtest`: synthetic load against any OIP endpoint, per-model throughput and tails.

The seed's pre-launch step "run synthetic load tests to measure per-device throughput and tail
latency": point it at a local pool, a cluster's pool Service or a single Pi. It reads each
model's metadata, sends random inputs of that shape with an unmodified `tritonclient`, at a
fixed concurrency (closed loop) or a fixed rate (open loop), and reports a table, JSON and a
PNG. `--write-measured` records throughput where `hatswarm plan` and placement read it.

    hatswarm loadtest --url 127.0.0.1:8001 --model shufflenet --concurrency 4 --duration 20
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hatswarm_agent.protocol.datatypes import OIP_TO_NUMPY
from hatswarm_agent.protocol.wire import ROUTE_PARAM

from hatswarm_operator.cli.common import UsageError, failures, run, usage_errors

DTYPES = {k: v.type for k, v in OIP_TO_NUMPY.items() if k not in ("BF16", "BYTES")}


@dataclass
class ModelRun:
    model: str
    ok: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    routes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {
            "model": self.model,
            "requests": self.ok + self.failed,
            "ok": self.ok,
            "failed": self.failed,
            "throughput_rps": round(self.ok / self.seconds, 2) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p95_ms": round(float(np.percentile(lat, 95)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "errors": self.errors,
            "routes": self.routes,
        }


def make_inputs(client: Any, model: str, batch: int, rng: np.random.Generator) -> list[Any]:
    import tritonclient.grpc as grpcclient

    meta = client.get_model_metadata(model)
    inputs = []
    for t in meta.inputs:
        shape = [
            batch if (i == 0 and d == -1) else (1 if d == -1 else d) for i, d in enumerate(t.shape)
        ]
        dtype = DTYPES.get(t.datatype)
        if dtype is None:
            raise ValueError(f"{model}: input {t.name} has datatype {t.datatype}, not supported")
        data: np.ndarray[Any, Any]
        if np.issubdtype(dtype, np.floating):
            data = rng.random(shape).astype(dtype)
        elif dtype is np.bool_:
            data = rng.random(shape) > 0.5
        else:
            data = rng.integers(0, 100, size=shape).astype(dtype)
        inp = grpcclient.InferInput(t.name, shape, t.datatype)
        inp.set_data_from_numpy(data)
        inputs.append(inp)
    return inputs


def run_model(
    url: str,
    model: str,
    *,
    concurrency: int,
    duration: float,
    rate: float,
    batch: int,
    token: str,
    live: bool,
) -> ModelRun:
    import tritonclient.grpc as grpcclient

    result = ModelRun(model)
    lock = threading.Lock()
    headers = {"authorization": f"Bearer {token}"} if token else None
    stop_at = time.monotonic() + duration
    started = time.monotonic()
    interval = concurrency / rate if rate > 0 else 0.0

    def worker(seed: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        rng = np.random.default_rng(seed)
        inputs = make_inputs(client, model, batch, rng)
        next_at = time.monotonic()
        try:
            while time.monotonic() < stop_at:
                if interval:
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
                t0 = time.perf_counter()
                try:
                    res = client.infer(model, inputs, headers=headers, client_timeout=30.0)
                except Exception as err:  # counted, never hidden
                    with lock:
                        result.failed += 1
                        key = str(err).split("\n")[0][:100]
                        result.errors[key] = result.errors.get(key, 0) + 1
                    continue
                ms = (time.perf_counter() - t0) * 1000
                route = res.get_response().parameters.get(ROUTE_PARAM)
                with lock:
                    result.ok += 1
                    result.latencies_ms.append(ms)
                    if route is not None:
                        r = route.string_param
                        result.routes[r] = result.routes.get(r, 0) + 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        if live:
            with lock:
                done, failed = result.ok, result.failed
            elapsed = time.monotonic() - started
            sys.stderr.write(
                f"\r  {model}: {elapsed:5.1f}/{duration:.0f} s  {done} ok  {failed} failed  "
                f"{done / max(elapsed, 1e-6):7.1f} req/s"
            )
            sys.stderr.flush()
    if live:
        sys.stderr.write("\n")
    result.seconds = time.monotonic() - started
    return result


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    names = [r["model"] for r in rows]
    a.bar(names, [r["throughput_rps"] for r in rows], color="#4c72b0")
    a.set_ylabel("requests/s")
    a.set_title("throughput")
    x = np.arange(len(rows))
    for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        b.bar(x + (i - 1) * 0.25, [r[q] for r in rows], width=0.25, label=q[:3])
    b.set_xticks(x, names)
    b.set_ylabel("ms")
    b.set_title("latency")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hatswarm loadtest", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="host:port of an OIP gRPC endpoint")
    p.add_argument("--model", action="append", required=True, help="model name (repeatable)")
    p.add_argument("--concurrency", type=int, default=4, help="clients per model")
    p.add_argument("--rate", type=float, default=0.0, help="requests/s per model (0: closed loop)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per model")
    p.add_argument("--batch", type=int, default=1, help="batch size for dynamic-batch models")
    p.add_argument("--token-file", type=Path, help="bearer token for the pool's auth")
    p.add_argument("--json", type=Path, help="write results as JSON")
    p.add_argument("--plot", type=Path, help="write a PNG of throughput and latency")
    p.add_argument(
        "--write-measured",
        type=Path,
        metavar="FILE",
        help="merge {model: {accelerator: fps}} into FILE",
    )
    p.add_argument(
        "--accelerator", default="cpu", help="accelerator the figures are for (--write-measured)"
    )
    p.add_argument("--quiet", action="store_true")
    return p


def _command(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.duration <= 0 or args.rate < 0 or args.batch < 1:
        raise UsageError("--concurrency and --batch must be >= 1, --duration > 0, --rate >= 0")
    with usage_errors(OSError):
        token = args.token_file.read_text().strip() if args.token_file else ""
    rows = []
    for model in args.model:
        with failures(Exception, what=f"{model}: "):
            result = run_model(
                args.url, model, concurrency=args.concurrency, duration=args.duration,
                rate=args.rate, batch=args.batch, token=token, live=not args.quiet,
            )  # fmt: skip
        rows.append(result.summary())
    print(
        f"{'MODEL':<20} {'OK':>7} {'FAILED':>7} {'REQ/S':>9} {'P50-MS':>8} {'P95-MS':>8} {'P99-MS':>8}"
    )
    for r in rows:
        print(
            f"{r['model']:<20} {r['ok']:>7} {r['failed']:>7} {r['throughput_rps']:>9.1f} "
            f"{r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"url": args.url, "results": rows}, indent=1))
    if args.plot:
        plot(rows, args.plot)
    if args.write_measured:
        measured: dict[str, dict[str, float]] = {}
        if args.write_measured.exists():
            measured = json.loads(args.write_measured.read_text())
        for r in rows:
            measured.setdefault(r["model"], {})[args.accelerator] = r["throughput_rps"] * args.batch
        args.write_measured.write_text(json.dumps(measured, indent=1, sort_keys=True))
    return 1 if any(r["failed"] for r in rows) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, _command)
