"""`hatswarm-agent`: serve models standalone, or as a node of a pool driven by the operator.

    hatswarm-agent --port 8001 --model cnn=/models/cnn.onnx --model mlp=file:///m/mlp.onnx
    hatswarm-agent --model-dir /models --backend simulated --accelerator hailo8l
    hatswarm-agent --gateway --peer cnn=10.0.0.5:8001 --peer cnn=10.0.0.6:8001,2
    hatswarm-agent --routing-table pool.json --auth-token-file /run/secrets/pool-token
    hatswarm-agent --http-port 8000 --model chat@genai=/models/qwen --model vec@embed=/models/mini

Prints `hatswarm-agent http on HOST:PORT` when the HTTP doors are on (OpenAI /v1, Ollama /api,
KServe v2 REST /v2), then `hatswarm-agent ready on HOST:PORT` (flushed) once serving;
SIGTERM/SIGINT stop it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from hatswarm_agent.backends import BACKEND_NAMES, canonical_name
from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.control.lifecycle import QueueDefaults
from hatswarm_agent.protocol.auth import TlsFiles
from hatswarm_agent.protocol.defaults import ROUTE_RETRIES, ROUTE_TIMEOUT_MS
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.config import DispatchConfig
from hatswarm_agent.routing.policy import POLICIES
from hatswarm_agent.routing.table import TableFileError, parse_peer, static_table
from hatswarm_agent.server import Agent, AgentConfig

log = logging.getLogger("hatswarm_agent")


def parse_model(spec: str, backend: str, options: dict[str, str]) -> control_pb2.LoadModelRequest:
    """NAME[:VERSION][@BACKEND]=URI[#sha256=HEX] to a LoadModelRequest (BACKEND: this model's
    backend instead of --backend's, e.g. chat@genai for a generative model folder)."""
    name, sep, uri = spec.partition("=")
    if not sep or not name or not uri:
        raise argparse.ArgumentTypeError(f"--model wants NAME=URI, got {spec!r}")
    name, at, own_backend = name.partition("@")
    if at:
        try:
            canonical_name(own_backend)
        except BackendError as exc:
            raise argparse.ArgumentTypeError(f"--model {spec!r}: {exc}") from None
        backend = own_backend
    name, _, version = name.partition(":")
    sha256 = ""
    if "#" in uri:
        uri, _, fragment = uri.rpartition("#")
        key, _, value = fragment.partition("=")
        if key != "sha256" or not value:
            raise argparse.ArgumentTypeError(
                f"--model fragment must be #sha256=HEX, got #{fragment}"
            )
        sha256 = value.lower()
    return control_pb2.LoadModelRequest(
        name=name, version=version, uri=uri, sha256=sha256, backend=backend, options=options
    )


def parse_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option wants KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hatswarm-agent", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in pods)")
    p.add_argument("--port", type=int, default=8001, help="OIP + control gRPC port (0 = any)")
    p.add_argument(
        "--uds", type=Path, metavar="PATH", help="also serve on this unix socket (local clients)"
    )
    p.add_argument("--node-name", default="local")
    p.add_argument("--accelerator", choices=["cpu", "hailo8l", "hailo8"], default="cpu")
    p.add_argument("--backend", choices=list(BACKEND_NAMES), default="onnxruntime")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[:VERSION][@BACKEND]=URI[#sha256=HEX]",
        help="a model to serve: a file, a model folder (generative models) or a tarball of one",
    )
    p.add_argument("--model-dir", type=Path, help="serve every *.onnx in DIR (name = stem)")
    p.add_argument(
        "--option",
        action="append",
        type=parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="backend option for the command-line models (intra_op_threads, workers, profile, ...)",
    )
    p.add_argument(
        "--state-dir", type=Path, help="assignment + artifact cache (default: temporary)"
    )
    p.add_argument("--cache-max-bytes", type=int, default=4 << 30)
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus /metrics port; 0 = off")
    p.add_argument(
        "--http-port",
        type=int,
        default=0,
        help="HTTP doors (OpenAI /v1, Ollama /api, KServe v2 REST /v2); 0 = off",
    )
    p.add_argument("--queue-limit", type=int, default=256, help="requests per model before refusal")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--max-queue-delay-us", type=int, default=0)
    p.add_argument("--max-message-bytes", type=int, default=64 << 20)
    p.add_argument("--grace-seconds", type=float, default=5.0)
    p.add_argument("--gateway", action="store_true", help="no local backend (routing only)")
    r = p.add_argument_group("routing (a pushed table replaces the static one)")
    r.add_argument("--routing-table", type=Path, metavar="FILE", help="RoutingTable JSON/YAML")
    r.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="MODEL[:VERSION]=HOST:PORT[,WEIGHT]",
        help="a peer serving MODEL (repeatable)",
    )
    r.add_argument("--policy", choices=POLICIES, help="balancing policy (default: the table's)")
    r.add_argument(
        "--retries", type=int, default=ROUTE_RETRIES, help="other replicas tried (no table)"
    )
    r.add_argument(
        "--timeout-ms", type=int, default=ROUTE_TIMEOUT_MS, help="request budget (no table)"
    )
    r.add_argument(
        "--hedge-after-percentile",
        type=float,
        default=0.0,
        metavar="P",
        help="send a second copy to another replica past this latency percentile (0 = off)",
    )
    r.add_argument(
        "--shed-below-priority",
        type=int,
        default=1,
        help="when saturated, refuse priorities below this; the others wait",
    )
    r.add_argument("--response-cache-entries", type=int, default=4096)
    r.add_argument("--response-cache-bytes", type=int, default=64 << 20)
    s = p.add_argument_group("security")
    s.add_argument("--auth-token-file", type=Path, help="require 'authorization: Bearer <token>'")
    s.add_argument("--tls-cert", type=Path, help="PEM certificate (server and toward peers)")
    s.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    s.add_argument("--tls-ca", type=Path, help="PEM CA: require client certificates (mTLS)")
    p.add_argument("--log-level", default="WARNING")
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    options = dict(args.option)
    backend = "" if args.backend == "onnxruntime" else args.backend
    models = [parse_model(spec, backend, options) for spec in args.model]
    if args.model_dir is not None:
        for path in sorted(Path(args.model_dir).glob("*.onnx")):
            models.append(
                control_pb2.LoadModelRequest(
                    name=path.stem, uri=str(path.resolve()), backend=backend, options=options
                )
            )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise TableFileError("--tls-cert and --tls-key go together")
    if args.tls_ca and not args.tls_cert:
        raise TableFileError("--tls-ca needs --tls-cert and --tls-key")
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
    routing = DispatchConfig(
        node_name=args.node_name,
        policy=args.policy or "",
        retries=args.retries,
        timeout_ms=args.timeout_ms,
        hedge_after_percentile=args.hedge_after_percentile,
        shed_below_priority=args.shed_below_priority,
        cache_max_entries=args.response_cache_entries,
        cache_max_bytes=args.response_cache_bytes,
    )
    table = static_table(args.routing_table, [parse_peer(spec) for spec in args.peer])
    return AgentConfig(
        host=args.host,
        port=args.port,
        node_name=args.node_name,
        accelerator=args.accelerator,
        backend=args.backend,
        state_dir=args.state_dir,
        cache_max_bytes=args.cache_max_bytes,
        metrics_port=args.metrics_port,
        http_port=args.http_port,
        queue=QueueDefaults(args.queue_limit, args.max_batch_size, args.max_queue_delay_us),
        gateway=args.gateway,
        max_message_bytes=args.max_message_bytes,
        grace_seconds=args.grace_seconds,
        models=models,
        routing=routing,
        routing_table=table,
        auth_token_file=args.auth_token_file,
        tls=tls,
        uds=args.uds,
    )


async def serve(config: AgentConfig) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully."""
    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    # What start-up made lives as long as the agent: out of the collector's sight, a full
    # collection (15 ms here with the modules and models loaded) costs nothing mid-request.
    gc.freeze()
    for entry in agent.registry.all():
        if not entry.ready:
            log.warning("model %s/%s FAILED: %s", entry.name, entry.version, entry.reason)
    if agent.http_port:
        print(f"hatswarm-agent http on {config.host}:{agent.http_port}", flush=True)
    if config.uds is not None:
        print(f"hatswarm-agent unix socket on unix:{config.uds}", flush=True)
    print(f"hatswarm-agent ready on {config.host}:{agent.port}", flush=True)
    await stop.wait()
    await agent.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
        asyncio.run(serve(config))
    except TableFileError as exc:
        print(f"hatswarm-agent: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"hatswarm-agent: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hatswarm-agent: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
