"""`hatswarm loadtest`: synthetic load against any OIP endpoint, per-model throughput and tails.

The seed's pre-launch step "run synthetic load tests to measure per-device throughput and tail
latency": point it at a local pool, a cluster's pool Service or a single Pi. It reads each
model's metadata, sends random inputs of that shape with an unmodified `tritonclient`, at a
fixed concurrency (closed loop) or a fixed rate (open loop), and prints a table (`-o json|yaml`
for scripts); `--out FILE` and `--plot FILE` also write JSON and a PNG. `--write-measured`
records throughput where `hatswarm plan` and placement read it. Exits 1 when the endpoint
cannot be reached or any request failed.

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

from hatswarm_operator.cli.common import (
    CommandError,
    Deprecated,
    Parser,
    UsageError,
    add_output,
    emit,
    failures,
    one_line,
    run,
)

PREFLIGHT_TIMEOUT_S = 10.0
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
        lat = np.array(self.latencies_ms)

        def q(p: int) -> float | None:  # None (JSON null, a blank cell) when nothing succeeded
            return round(float(np.percentile(lat, p)), 3) if lat.size else None

        return {
            "model": self.model,
            "requests": self.ok + self.failed,
            "ok": self.ok,
            "failed": self.failed,
            "throughput_rps": round(self.ok / self.seconds, 2) if self.seconds else 0.0,
            "p50_ms": q(50),
            "p95_ms": q(95),
            "p99_ms": q(99),
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

    def fail(err: Exception) -> None:
        with lock:
            result.failed += 1
            key = one_line(err)[:100]
            result.errors[key] = result.errors.get(key, 0) + 1

    def worker(seed: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        rng = np.random.default_rng(seed)
        next_at = time.monotonic()
        try:
            try:
                inputs = make_inputs(client, model, batch, rng)
            except Exception as err:  # counted like a failed request, never a thread traceback
                fail(err)
                return
            while time.monotonic() < stop_at:
                if interval:
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
                t0 = time.perf_counter()
                try:
                    res = client.infer(model, inputs, headers=headers, client_timeout=30.0)
                except Exception as err:  # counted, never hidden
                    fail(err)
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
        b.bar(x + (i - 1) * 0.25, [r[q] or 0 for r in rows], width=0.25, label=q[:3])
    b.set_xticks(x, names)
    b.set_ylabel("ms")
    b.set_title("latency")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hatswarm loadtest", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, metavar="HOST:PORT", help="an OIP gRPC endpoint")
    p.add_argument("--model", action="append", required=True, help="model name (repeatable)")
    p.add_argument("--concurrency", type=int, default=4, help="clients per model")
    p.add_argument("--rate", type=float, default=0.0, help="requests/s per model (0: closed loop)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per model")
    p.add_argument("--batch", type=int, default=1, help="batch size for dynamic-batch models")
    p.add_argument("--token-file", type=Path, help="bearer token for the pool's auth")
    add_output(p, json_flag=False)
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--json", action=Deprecated, dest="out", type=Path, metavar="FILE",
        replacement="--out FILE (or -o json for stdout)",
    )  # fmt: skip
    p.add_argument(
        "--plot", type=Path, metavar="FILE", help="write a PNG of throughput and latency"
    )
    p.add_argument(
        "--write-measured",
        type=Path,
        metavar="FILE",
        help="merge {model: {accelerator: fps}} into FILE",
    )
    p.add_argument(
        "--accelerator", default="cpu", help="accelerator the figures are for (--write-measured)"
    )
    p.add_argument("--quiet", action="store_true", help="no live progress on stderr")
    return p


def preflight(url: str, model: str, token: str) -> None:
    """Reach the endpoint and the model once, so a dead URL or an unknown model is one clear
    error instead of a load test of failures."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    headers = {"authorization": f"Bearer {token}"} if token else None
    client = grpcclient.InferenceServerClient(url)
    try:
        client.get_model_metadata(model, headers=headers, client_timeout=PREFLIGHT_TIMEOUT_S)
    except InferenceServerException as err:
        status = err.status() or ""
        if status in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"):
            raise CommandError(f"cannot reach {url}: {one_line(err.message())}") from err
        raise CommandError(f"{url}: model {model!r}: {one_line(err.message())}") from err
    finally:
        client.close()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'MODEL':<20} {'OK':>7} {'FAILED':>7} {'REQ/S':>9} {'P50-MS':>8} {'P95-MS':>8} "
        f"{'P99-MS':>8}"
    ]
    for r in rows:
        lines.append(
            f"{r['model']:<20} {r['ok']:>7} {r['failed']:>7} {r['throughput_rps']:>9.1f} "
            f"{_ms(r['p50_ms']):>8} {_ms(r['p95_ms']):>8} {_ms(r['p99_ms']):>8}"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _command(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.duration <= 0 or args.rate < 0 or args.batch < 1:
        raise UsageError("--concurrency and --batch must be >= 1, --duration > 0, --rate >= 0")
    host, colon, port = args.url.rpartition(":")
    if "://" in args.url or not colon or not host or not port.isdigit():
        raise UsageError(f"--url wants HOST:PORT of a gRPC endpoint, got {args.url!r}")
    with failures(OSError, what="--token-file: "):
        token = args.token_file.read_text().strip() if args.token_file else ""
    rows = []
    for model in args.model:
        preflight(args.url, model, token)
        result = run_model(
            args.url, model, concurrency=args.concurrency, duration=args.duration,
            rate=args.rate, batch=args.batch, token=token, live=not args.quiet,
        )  # fmt: skip
        rows.append(result.summary())
    emit(args.output, {"url": args.url, "results": rows}, lambda: table(rows))
    with failures(OSError, what="cannot write: "):
        if args.out:
            args.out.write_text(json.dumps({"url": args.url, "results": rows}, indent=1))
        if args.plot:
            try:
                plot(rows, args.plot)
            except ImportError as exc:
                msg = "--plot needs matplotlib: pip install 'hatswarm-operator[plot]'"
                raise CommandError(msg) from exc
        if args.write_measured:
            write_measured(args.write_measured, rows, args.accelerator, args.batch)
    failed = sum(r["failed"] for r in rows)
    if failed:
        total = sum(r["requests"] for r in rows)
        worst = max(rows, key=lambda r: r["failed"])
        first = next(iter(worst["errors"]), "")
        raise CommandError(f"{failed} of {total} requests failed ({worst['model']}: {first})")
    return 0


def write_measured(path: Path, rows: list[dict[str, Any]], accelerator: str, batch: int) -> None:
    """Merge measured throughput into `path`, where `hatswarm plan --measured` reads it."""
    measured: dict[str, dict[str, float]] = {}
    if path.exists():
        try:
            measured = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CommandError(f"--write-measured {path}: not JSON: {exc}") from exc
    for r in rows:
        measured.setdefault(r["model"], {})[accelerator] = r["throughput_rps"] * batch
    path.write_text(json.dumps(measured, indent=1, sort_keys=True))


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, _command)
