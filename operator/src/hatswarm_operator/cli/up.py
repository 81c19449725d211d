"""`hatswarm up` runs a whole pool on this machine; `hatswarm status` shows it.

hatswarm up                      # the bundled example pool: works offline
hatswarm up -f examples/ --nodes 5
hatswarm status -o json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from hatswarm_operator.api.manifests import ManifestError, ManifestSet, load, parse_object
from hatswarm_operator.cli.common import (
    CommandError,
    Parser,
    UsageError,
    add_output,
    emit,
    failures,
    run,
    usage_errors,
)
from hatswarm_operator.control import metrics as operator_metrics
from hatswarm_operator.local.pool import LocalPool, default_state_dir
from hatswarm_operator.local.processes import (
    bundled_manifests,
    default_nodes,
    free_port,
    load_nodes_file,
    prometheus_config,
    start_prometheus,
)
from hatswarm_operator.local.secrets import client_token_file
from hatswarm_operator.local.status import render


def resolve(files: list[str] | None, state_dir: Path) -> ManifestSet:
    if files:
        return load(files)
    out = ManifestSet()
    for doc in bundled_manifests(state_dir):
        obj = parse_object(doc, "bundled example")
        (out.pools if obj.kind == "InferencePool" else out.models).append(obj)  # type: ignore[arg-type]
    return out


async def run_up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    with usage_errors(ManifestError):
        found = resolve(args.filename, state_dir)
    if len(found.pools) != 1:
        raise UsageError(f"need exactly one InferencePool, found {len(found.pools)}")
    pool = found.pools[0]
    with usage_errors(OSError, ValueError, yaml.YAMLError):
        try:
            nodes = (
                load_nodes_file(args.nodes_file, pool.spec.node_selector)
                if args.nodes_file
                else default_nodes(args.nodes, pool.spec.node_selector)
            )
        except OSError as exc:
            raise OSError(f"--nodes-file {args.nodes_file}: {exc.strerror or exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"hatswarm up: starting {len(nodes)} simulated nodes for pool {pool.metadata.name} ...",
        flush=True,
    )
    async with LocalPool(pool, found.models, nodes, state_dir) as local:
        print(
            f"hatswarm up: pool entry points: {', '.join(a.address for a in local.agents.values())}",
            flush=True,
        )
        doors = ", ".join(f"http://127.0.0.1:{a.http_port}" for a in local.agents.values())
        print(f"hatswarm up: HTTP (OpenAI /v1, Ollama /api, KServe /v2): {doors}", flush=True)
        tokens = client_token_file(pool, state_dir)
        print(
            "hatswarm up: clients present 'authorization: Bearer <token>' with the token in "
            f"{tokens}"
            if tokens
            else "hatswarm up: inference is open (unauthenticatedInference)",
            flush=True,
        )
        print(
            f"hatswarm up: status in {local.sink.path} (`hatswarm status`); Ctrl-C stops",
            flush=True,
        )
        prom = None
        try:
            if args.prometheus:
                loop_port = free_port()
                operator_metrics.serve(loop_port, host="127.0.0.1")
                agents = list(local.agents.values())
                prom = start_prometheus(
                    prometheus_config(agents, loop_port, pool.metadata.name),
                    state_dir / "prometheus",
                )
                await prom.ready()
                print(
                    f"hatswarm up: Prometheus on {prom.url} (agents and the control loop)",
                    flush=True,
                )
            await _show_status(local, stop, args)
        finally:
            if prom is not None:
                prom.stop()
    print("hatswarm up: stopped every agent", flush=True)
    return 0


async def _show_status(local: LocalPool, stop: asyncio.Event, args: argparse.Namespace) -> None:
    """Redraw the status table when it changes, until Ctrl-C or --duration."""
    last = ""
    elapsed = 0.0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=args.refresh)
        elapsed += args.refresh
        if not args.quiet:
            text = render(local.sink.snapshot())
            if text != last:
                print(("\033[2J\033[H" if sys.stdout.isatty() else "\n") + text, flush=True)
                last = text
        if args.duration and elapsed >= args.duration:
            break


def up_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hatswarm up", description=__doc__.split("\n")[0])
    p.add_argument("-f", "--filename", action="append", help="manifest file or folder")
    p.add_argument("--nodes", type=int, default=3, help="simulated Pi + HAT+ nodes (default 3)")
    p.add_argument(
        "--nodes-file", type=Path, help="YAML list of {name, accelerator, labels, memoryMiB}"
    )
    p.add_argument("--state-dir", type=Path, default=default_state_dir())
    p.add_argument("--refresh", type=float, default=2.0, help="seconds between table refreshes")
    p.add_argument("--duration", type=float, default=0.0, help="stop after N seconds (0: never)")
    p.add_argument("--quiet", action="store_true", help="no live table")
    p.add_argument(
        "--prometheus", action="store_true", help="also run a real Prometheus scraping the pool"
    )
    return p


def _up(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        raise UsageError("--nodes must be >= 1")
    with failures(ValueError, RuntimeError, LookupError, OSError):
        return asyncio.run(run_up(args))


def up_main(argv: Sequence[str] | None = None) -> int:
    return run(up_parser(), argv, _up)


def status_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hatswarm status", description="status of `hatswarm up`")
    add_output(p, json_flag=False)
    p.add_argument("--state-dir", type=Path, default=default_state_dir())
    return p


def _status(args: argparse.Namespace) -> int:
    path = args.state_dir / "status.json"
    if not path.exists():
        raise CommandError(f"no local pool status at {path} (is `hatswarm up` running?)")
    with failures(OSError, ValueError, what=f"cannot read {path}: "):
        snap = json.loads(path.read_text())
    emit(args.output, snap, lambda: render(snap))
    return 0


def status_main(argv: Sequence[str] | None = None) -> int:
    return run(status_parser(), argv, _status)


main = up_main
