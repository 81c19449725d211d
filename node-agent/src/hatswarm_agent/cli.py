"""`hatswarm-agent`: serve models standalone, or as a node of a pool driven by the operator.

    hatswarm-agent --port 8001 --model cnn=/models/cnn.onnx --model mlp=file:///m/mlp.onnx
    hatswarm-agent --model-dir /models --backend simulated --accelerator hailo8l
    hatswarm-agent --backend auto --model det=/models/yolov8s_h8l.hef   # NPU if HailoRT opens one
    hatswarm-agent --gateway --peer cnn=10.0.0.5:8001 --peer cnn=10.0.0.6:8001,2
    hatswarm-agent --routing-table pool.json --auth-token-file /run/secrets/pool-token \
        --control-token-file /run/secrets/control/token --allow-file-root /models
    hatswarm-agent --http-port 8000 --model chat@genai=/models/qwen --model vec@embed=/models/mini
    hatswarm-agent --http-port 8000 --model chat=/models/qwen2.5-0.5b-q4_k_m.gguf  # llama.cpp

Prints `hatswarm-agent http on HOST:PORT` when the HTTP doors are on (OpenAI /v1, Ollama /api,
KServe v2 REST /v2), then `hatswarm-agent ready on HOST:PORT` (flushed) once serving;
SIGTERM/SIGINT stop it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from hatswarm_agent.backends import BACKEND_NAMES, canonical_name
from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.control.lifecycle import QueueDefaults
from hatswarm_agent.control.repository import RepositoryError, repository_models
from hatswarm_agent.protocol.auth import TlsFiles
from hatswarm_agent.protocol.defaults import ROUTE_RETRIES, ROUTE_TIMEOUT_MS
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.config import DispatchConfig
from hatswarm_agent.routing.policy import ATTEMPT_FACTOR, ATTEMPT_MIN_S, POLICIES
from hatswarm_agent.routing.table import TableFileError, parse_peer, static_table
from hatswarm_agent.server import Agent, AgentConfig
from hatswarm_agent.serving.tensors import DEFAULT_LIMITS, TensorLimits

log = logging.getLogger("hatswarm_agent")


def parse_model(spec: str, backend: str, options: dict[str, str]) -> control_pb2.LoadModelRequest:
    """NAME[:VERSION][@BACKEND]=URI[#sha256=HEX] to a LoadModelRequest (BACKEND: this model's
    backend instead of --backend's, e.g. chat@genai for a generative model folder)."""
    name, sep, uri = spec.partition("=")
    if not sep or not name or not uri:
        hint = f" (e.g. {Path(spec).stem}={spec})" if not sep and spec else ""
        raise argparse.ArgumentTypeError(f"--model wants NAME=URI, got {spec!r}{hint}")
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


def parse_cloud_token(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--cloud-token wants NAME=FILE, got {text!r}")
    return name, Path(path)


def parse_bool(text: str) -> bool:
    """tritonserver's spelling of boolean flags: `--strict-readiness=false`."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"want true or false, got {text!r}")


def _shows_default(action: argparse.Action) -> bool:
    """An option whose default says something (not None, a flag's False, an empty list)."""
    default = action.default
    return (
        bool(action.option_strings)
        and action.nargs != 0
        and default is not None
        and default is not argparse.SUPPRESS
        and not isinstance(default, bool)
        and default not in ([], "")
    )


class _DefaultsFormatter(argparse.HelpFormatter):
    """--help shows each option's default, unless its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" not in text and _shows_default(action):
            text = f"{text} (default: %(default)s)".lstrip()
        return text


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (exit 2), as every hatswarm command reports them."""

    def format_help(self) -> str:
        # argparse skips the help formatter for options without help text: give those one
        # that shows their default.
        for action in self._actions:
            if action.help is None and _shows_default(action):
                action.help = "(default: %(default)s)"
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def file_mode(text: str) -> int:
    """An octal file mode such as 0660 (chmod's digits)."""
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal file mode: {text!r}") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"file mode {text} is outside 000..777")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0..65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hatswarm-agent",
        description=__doc__.split("\n")[0],
        formatter_class=_DefaultsFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in pods)")
    p.add_argument("--port", type=port, default=8001, help="OIP + control gRPC port (0 = any)")
    p.add_argument(
        "--uds", type=Path, metavar="PATH", help="also serve on this unix socket (local clients)"
    )
    p.add_argument(
        "--unix-socket-mode", type=file_mode, default=0o660, metavar="MODE",
        help="octal file mode of the --uds socket: who on this host may connect (default 0660: "
        "the agent's user and group, as containerd and docker create theirs)",
    )  # fmt: skip
    p.add_argument("--node-name", default="local")
    p.add_argument(
        "--accelerator", choices=["cpu", "hailo8l", "hailo8", "hailo10h"], default="cpu",
        help="the chip this node is expected to have (the simulated backend's device); the "
        "hailo backend reports the chip HailoRT identifies instead",
    )  # fmt: skip
    p.add_argument(
        "--backend", choices=list(BACKEND_NAMES), default="auto",
        help="auto: HailoRT when a Hailo device opens, else onnxruntime on the CPU (which one is "
        "logged, in NodeStatus and in hatswarm_agent_backend_info)",
    )  # fmt: skip
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[:VERSION][@BACKEND]=URI[#sha256=HEX]",
        help="a model to serve: a file, a model folder (generative models) or a tarball of one; "
        "URI is a path, file:// or http(s):// (repeatable)",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        metavar="DIR",
        help="serve DIR/NAME.onnx files or a Triton repository (NAME/VERSION/model.onnx, "
        "optional NAME/config.pbtxt)",
    )
    p.add_argument(
        "--strict-readiness",
        type=parse_bool,
        default=True,
        metavar="BOOL",
        help="OIP ServerReady is false while a --model/--model-dir model is not READY "
        "(default: true, as tritonserver; false: ready once serving)",
    )
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
    p.add_argument(
        "--download-idle-seconds",
        type=float,
        default=30.0,
        help="an artifact download receiving under --download-idle-min-bytes in this long fails",
    )
    p.add_argument("--download-idle-min-bytes", type=int, default=64 << 10)
    p.add_argument("--metrics-port", type=port, default=0, help="Prometheus /metrics port; 0 = off")
    p.add_argument(
        "--http-port",
        type=port,
        default=0,
        help="HTTP doors (OpenAI /v1, Ollama /api, KServe v2 REST /v2); 0 = off",
    )
    p.add_argument("--queue-limit", type=int, default=256, help="requests per model before refusal")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--max-queue-delay-us", type=int, default=0)
    p.add_argument("--max-message-bytes", type=int, default=64 << 20)
    p.add_argument(
        "--max-bytes-elements",
        type=int,
        default=DEFAULT_LIMITS.max_bytes_elements,
        help="BYTES (string) elements one request may carry; more is INVALID_ARGUMENT",
    )
    p.add_argument(
        "--max-decoded-bytes",
        type=int,
        default=DEFAULT_LIMITS.max_decoded_bytes,
        help="memory one request's inputs may decode to (estimated before decoding)",
    )
    p.add_argument("--grace-seconds", type=float, default=5.0)
    p.add_argument("--gateway", action="store_true", help="no local backend (routing only)")
    r = p.add_argument_group(
        "routing (a pushed table's routes replace the static ones for the models it routes; "
        "--peer/--routing-table routes of other models stay)"
    )
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
        "--retries",
        type=int,
        default=ROUTE_RETRIES,
        help="other replicas tried (unless the routing table sets it)",
    )
    r.add_argument(
        "--timeout-ms",
        type=int,
        default=ROUTE_TIMEOUT_MS,
        help="request budget (unless the routing table sets one)",
    )
    r.add_argument(
        "--attempt-timeout-factor",
        type=float,
        default=ATTEMPT_FACTOR,
        metavar="K",
        help="a forwarded attempt unanswered after K x the peer's observed latency is hedged "
        "to another replica and counts toward the peer's ejection",
    )
    r.add_argument(
        "--attempt-timeout-min-ms",
        type=int,
        default=int(ATTEMPT_MIN_S * 1000),
        help="the per-attempt timeout is never shorter than this",
    )
    r.add_argument(
        "--await-routing-table",
        action="store_true",
        help="a pool agent: health NOT_SERVING, and models it lacks UNAVAILABLE (retryable), "
        "until the control plane's first routing table arrives (or one saved in --state-dir)",
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
    s = p.add_argument_group("security (README: Security model)")
    s.add_argument(
        "--auth-token-file",
        type=Path,
        action="append",
        default=[],
        help="inference tokens, one a line (repeatable); without any, inference is open",
    )
    s.add_argument(
        "--control-token-file",
        type=Path,
        help="the control plane's token: the only credential that opens AgentControl "
        "(without it, AgentControl answers callers on this host only)",
    )
    s.add_argument(
        "--allow-file-root",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder LoadModel may read file:// artifacts from (repeatable; default: none)",
    )
    s.add_argument(
        "--trusted-keys",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="ed25519 public keys artifact signatures may be made with: a file, or a folder "
        "with one key a file (repeatable)",
    )
    s.add_argument(
        "--require-signatures",
        action="store_true",
        help="refuse LoadModel calls whose artifact is not signed by a trusted key",
    )
    s.add_argument(
        "--cloud-token",
        action="append",
        default=[],
        type=parse_cloud_token,
        metavar="NAME=FILE",
        help="a cloud fallback token a routing table may name (repeatable)",
    )
    s.add_argument("--tls-cert", type=Path, help="PEM certificate (server and toward peers)")
    s.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    s.add_argument("--tls-ca", type=Path, help="PEM CA: require client certificates (mTLS)")
    p.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )  # fmt: skip
    p.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    options = dict(args.option)
    backend = "" if args.backend in ("onnxruntime", "auto") else args.backend
    models = [parse_model(spec, backend, options) for spec in args.model]
    for spec, model in zip(args.model, models, strict=True):
        uri = model.uri
        local = uri.removeprefix("file://") if "://" not in uri or uri.startswith("file://") else ""
        if local and not Path(local).exists():  # a file, or a model folder
            raise argparse.ArgumentTypeError(f"--model {spec}: no such file {local}")
    if args.model_dir is not None:
        models.extend(repository_models(args.model_dir, backend, options))
    for flag in (
        "tls_cert", "tls_key", "tls_ca", "auth_token_file", "control_token_file", "routing_table",
    ):  # fmt: skip
        given = getattr(args, flag)
        for path in given if isinstance(given, list) else [given]:
            if path is not None and not path.is_file():
                raise TableFileError(f"--{flag.replace('_', '-')} {path}: no such file")
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
        attempt_timeout_factor=args.attempt_timeout_factor,
        attempt_timeout_min_ms=args.attempt_timeout_min_ms,
        await_table=args.await_routing_table,
    )
    if not args.download_idle_seconds > 0 or args.download_idle_min_bytes < 1:
        raise TableFileError("--download-idle-seconds and --download-idle-min-bytes must be > 0")
    if args.max_bytes_elements <= 0 or args.max_decoded_bytes <= 0:
        raise TableFileError("--max-bytes-elements and --max-decoded-bytes must be > 0")
    if args.timeout_ms <= 0 or args.attempt_timeout_min_ms <= 0:
        raise TableFileError("--timeout-ms and --attempt-timeout-min-ms must be > 0")
    if not args.attempt_timeout_factor > 0:
        raise TableFileError("--attempt-timeout-factor must be > 0")
    table = static_table(
        args.routing_table,
        [parse_peer(spec) for spec in args.peer],
        {"timeout_ms": args.timeout_ms, "retries": args.retries},
    )
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
        auth_token_files=tuple(args.auth_token_file),
        control_token_file=args.control_token_file,
        tls=tls,
        tensor_limits=TensorLimits(args.max_bytes_elements, args.max_decoded_bytes),
        download_idle_s=args.download_idle_seconds,
        download_idle_min_bytes=args.download_idle_min_bytes,
        uds=args.uds,
        uds_mode=args.unix_socket_mode,
        file_roots=tuple(args.allow_file_root),
        trusted_keys=tuple(args.trusted_keys),
        require_signatures=args.require_signatures,
        cloud_tokens=dict(args.cloud_token),
        strict_readiness=args.strict_readiness,
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
    """Usage mistakes exit 2 and runtime failures 1, each as one line naming the flag, file or
    port; the traceback only with --debug."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
    except (argparse.ArgumentTypeError, TableFileError, RepositoryError) as exc:
        return _fail(args, f"error: {exc} (see `hatswarm-agent --help`)", 2)
    try:
        check_port(args.host, args.port, "--port")
        if args.metrics_port:
            check_port(args.host, args.metrics_port, "--metrics-port")
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 130
    except BackendError as exc:
        return _fail(args, f"error: {exc}", 2)
    except Exception as exc:  # a port in use, a file that cannot be read, or a bug
        return _fail(args, f"error: {exc}", 1)
    return 0


def check_port(host: str, number: int, flag: str) -> None:
    """Fail before loading any model when the port cannot be had, naming it (gRPC would log a
    C-core error line and raise a bare RuntimeError after every model had loaded)."""
    if number == 0:
        return
    try:
        infos = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"--host {host}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(f"{flag} {number}: already in use on {host}") from exc
            raise OSError(f"{flag} {number} on {host}: {exc.strerror}") from exc


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.debug:
        traceback.print_exc()
    print(f"hatswarm-agent: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
