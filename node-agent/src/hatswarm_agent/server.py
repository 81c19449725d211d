"""Assembles one agent: grpc.aio server, OIP + control + health + reflection, graceful stop.

The request path is wired here and points one way: the OIP servicer and the HTTP doors call one
`infer` (the dispatcher's, which calls the data plane for what runs here; or, with
`dispatch=False`, the data plane's own) and one `generate` (the generation router's, or this
node's generations'); the data plane knows neither. The HTTP doors (--http-port) run on the same
event loop as grpc.aio.

Start order matters: the last assignment (and routing table) is reloaded from disk and the
command-line models are loaded before the port accepts calls, so the first control call sees
the restored state; only then is health SERVING and the ready line printed. A pool agent
(`--await-routing-table`) without a table stays NOT_SERVING until its first table arrives:
before that it could not route, and a load balancer must not send it clients (the service
`hatswarm.liveness` says it runs, for liveness probes). Stop order:
health NOT_SERVING everywhere (probes and load balancers drain us), then the grace period for
in-flight calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from hatswarm_agent.backends import Selection
from hatswarm_agent.control.artifacts import ArtifactStore
from hatswarm_agent.control.assignment import (
    AssignmentStore,
    KeptRoutingTables,
    RoutingTableFile,
)
from hatswarm_agent.control.lifecycle import Backends, ModelLifecycle, QueueDefaults
from hatswarm_agent.control.servicer import ControlServicer, NodeIdentity
from hatswarm_agent.control.signing import TrustedKeys
from hatswarm_agent.control.sources import ArtifactSources
from hatswarm_agent.http.common import Services
from hatswarm_agent.http.server import HttpServer
from hatswarm_agent.protocol.auth import AgentAuth, AuthInterceptor, TlsFiles, TokenFile
from hatswarm_agent.protocol.defaults import KEEPALIVE_SERVER_OPTIONS
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import LIVENESS_SERVICE
from hatswarm_agent.routing.config import DispatchConfig
from hatswarm_agent.routing.dispatcher import Dispatcher
from hatswarm_agent.routing.generation import GenerationRouter
from hatswarm_agent.routing.table import RoutingTableStore
from hatswarm_agent.serving.dataplane import DataPlane, ServingState
from hatswarm_agent.serving.generation import Generations
from hatswarm_agent.serving.metrics import AgentMetrics, RouteMetrics
from hatswarm_agent.serving.registry import DEFAULT_VERSION, ModelRegistry
from hatswarm_agent.serving.servicer import InferenceServicer
from hatswarm_agent.serving.servicer import add_to_server as add_inference_to_server
from hatswarm_agent.serving.shm import SharedMemoryInfer, SharedMemoryRegions
from hatswarm_agent.serving.tensors import TensorLimits

log = logging.getLogger(__name__)

CONTROL_NAME = control_pb2.DESCRIPTOR.services_by_name["AgentControl"].full_name
SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    CONTROL_NAME,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)


def reflected_services(config: AgentConfig) -> tuple[str, ...]:
    """What reflection lists: the control service only on an agent without a control token
    (whose control answers this host alone); a pool's agents do not advertise it to strangers."""
    if config.control_token_file is None:
        return SERVICE_NAMES
    return tuple(n for n in SERVICE_NAMES if n != CONTROL_NAME)


@dataclass
class AgentConfig:
    """Everything the command line sets."""

    host: str = "127.0.0.1"
    port: int = 8001
    node_name: str = "local"
    accelerator: str = "cpu"
    backend: str = "onnxruntime"
    state_dir: Path | None = None
    cache_max_bytes: int = 4 << 30
    metrics_port: int = 0
    http_port: int = 0  # OpenAI, Ollama and KServe v2 REST doors; 0 = off
    queue: QueueDefaults = field(default_factory=QueueDefaults)
    gateway: bool = False
    max_message_bytes: int = 64 << 20
    grace_seconds: float = 5.0
    models: list[control_pb2.LoadModelRequest] = field(default_factory=list)
    routing: DispatchConfig = field(default_factory=DispatchConfig)
    routing_table: control_pb2.RoutingTable | None = None  # static: --routing-table, --peer
    auth_token_files: tuple[Path, ...] = ()  # inference tokens; none: inference is open
    control_token_file: Path | None = None  # none: AgentControl from loopback only
    tls: TlsFiles | None = None
    uds: Path | None = None  # also listen on this unix socket (clients on this host)
    uds_mode: int = 0o660  # its file mode: owner and group connect, other local users do not
    file_roots: tuple[Path, ...] = ()  # where control-plane loads may read file:// artifacts
    trusted_keys: tuple[Path, ...] = ()  # ed25519 public keys (files or folders of files)
    require_signatures: bool = False
    cloud_tokens: dict[str, Path] = field(default_factory=dict)  # name -> token file
    strict_readiness: bool = True  # ServerReady false while a `models` entry is not READY

    tensor_limits: TensorLimits = field(default_factory=TensorLimits)
    # A download receiving fewer than `download_idle_min_bytes` in `download_idle_s` stalls out.
    download_idle_s: float = 30.0
    download_idle_min_bytes: int = 64 << 10


def log_selection(selection: Selection, accelerator: str) -> None:
    """Say which backend serves and why; a pinned one that cannot open is an error, not a crash:
    the agent keeps running (routing, health) and NodeStatus carries the reason."""
    if not selection.ready:
        log.error("%s: models for it will fail to load until it is available", selection.reason)
    elif accelerator != "cpu" and selection.name == "onnxruntime":
        log.warning("%s; this node was started as a %s node", selection.reason, accelerator)
    else:
        log.info("%s", selection.reason)


def server_options(config: AgentConfig) -> list[tuple[str, int]]:
    """grpc.aio options: message size limits (over them: RESOURCE_EXHAUSTED), one port owner,
    and the control plane's keepalive pings allowed (it pings a watched agent every second to
    see it die: protocol.defaults.KEEPALIVE_SERVER_OPTIONS)."""
    return [
        *KEEPALIVE_SERVER_OPTIONS,
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", 1024),
    ]


class Agent:
    """One running node agent."""

    def __init__(self, config: AgentConfig, *, dispatch: bool = True) -> None:
        """`dispatch=False`: no routing at all, every request runs (or fails) here."""
        self.config = config
        self.port = config.port
        self.state = ServingState(
            required=tuple((m.name, m.version or DEFAULT_VERSION) for m in config.models),
            strict=config.strict_readiness,
        )
        self.registry = ModelRegistry()
        self.backends = Backends(config.backend, config.accelerator)
        if not config.gateway:
            log_selection(self.backends.select(), config.accelerator)
        self.metrics = AgentMetrics(None if config.gateway else self.backends.device_info)
        if not config.gateway:
            self.metrics.backend_info(self.backends.select, self.backends.device_info)
        self.health = health_aio.HealthServicer()
        self._started = self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        state_dir = config.state_dir
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hatswarm-agent-")
            state_dir = Path(self._tmp.name)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sources = ArtifactSources(
            config.file_roots, TrustedKeys(config.trusted_keys), config.require_signatures
        )
        self.lifecycle = ModelLifecycle(
            self.registry,
            self.metrics,
            ArtifactStore(
                state_dir / "artifacts",
                config.cache_max_bytes,
                idle_timeout_s=config.download_idle_s,
                idle_min_bytes=config.download_idle_min_bytes,
            ),
            self.backends,
            self.health,
            assignment=AssignmentStore(state_dir / "assignment.json")
            if config.state_dir is not None
            else None,
            defaults=config.queue,
            gateway=config.gateway,
            sources=self.sources,
        )
        self.routing = RoutingTableStore(config.routing_table, cloud_tokens=config.cloud_tokens)
        self.auth = AgentAuth(
            control=TokenFile(config.control_token_file) if config.control_token_file else None,
            inference=tuple(TokenFile(p) for p in config.auth_token_files),
        )
        self.tables_file = (
            RoutingTableFile(config.state_dir / "routing-table.json")
            if config.state_dir is not None
            else None
        )
        saved = self.tables_file.load() if self.tables_file is not None else None
        if saved is not None and saved.generation > 0:
            self.routing.set(saved)  # route by the last pushed table until a newer one comes
        self.tables = KeptRoutingTables(self.routing, self.tables_file, self._table_adopted)
        self.dataplane = DataPlane(self.registry, self.metrics, self.state, config.tensor_limits)
        self.dispatcher: Dispatcher | None = None
        if dispatch:
            self.dispatcher = Dispatcher(
                replace(config.routing, node_name=config.node_name),
                self.dataplane,
                self.routing,
                RouteMetrics(self.metrics.registry),
                tokens=self.auth,
                tls=config.tls,
                cloud_tokens=config.cloud_tokens,
            )
        infer = self.dispatcher.infer if self.dispatcher is not None else self.dataplane.infer
        self.generations = Generations(self.registry, self.metrics, config.node_name)
        generate = self.generations.generate
        self.generation_router: GenerationRouter | None = None
        if self.dispatcher is not None:
            self.generation_router = GenerationRouter(self.dispatcher, self.generations, self.auth)
            generate = self.generation_router.generate
            infer = self.generation_router.infer  # escalates a generative model's long prompt
        # Clients on this host may pass tensors in shared memory (Triton's extension).
        self.shm = SharedMemoryRegions()
        oip_infer = SharedMemoryInfer(self.shm, self.dataplane, infer)
        self.inference = InferenceServicer(
            self.dataplane,
            oip_infer,
            generate,
            self.dispatcher,
            node_name=config.node_name,
            shm=self.shm,
        )
        self.http: HttpServer | None = None
        self.http_port = 0
        if config.http_port:
            dispatcher = self.dispatcher
            self.http = HttpServer(
                Services(
                    self.dataplane,
                    infer,
                    generate,
                    self.generations,
                    (lambda: dispatcher.compiled().models) if dispatcher is not None else tuple,
                    self.auth,
                ),
                config.tls,
            )
        self.server = grpc.aio.server(
            options=server_options(config), interceptors=[AuthInterceptor(self.auth)]
        )
        add_inference_to_server(self.inference, self.server)
        control_pb2_grpc.add_AgentControlServicer_to_server(
            ControlServicer(
                self.lifecycle,
                self.tables,
                NodeIdentity(config.node_name, config.accelerator, config.gateway),
                self.dispatcher.cloud.counters if self.dispatcher is not None else None,
            ),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(reflected_services(config), self.server)

    async def start(self) -> None:
        """Restore, load command-line models, listen, then report SERVING."""
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.config.host}:{self.config.port}"
        try:
            if self.config.tls is not None:
                credentials = self.config.tls.server_credentials()
                self.port = self.server.add_secure_port(address, credentials)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc's "Failed to bind ..."
            raise OSError(f"cannot listen on {address}: port in use or not allowed") from exc
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        if self.config.uds is not None:
            self._listen_unix(self.config.uds)
        if self.dispatcher is not None:
            await self.dispatcher.start(self.config.host, self.port)
        await self.lifecycle.restore()
        for request in self.config.models:  # the agent's own configuration: trusted
            await self.lifecycle.load(request, persistent=False, trusted=True)
        if self.config.metrics_port:
            self.metrics.serve(self.config.host, self.config.metrics_port)
        if self.http is not None:
            self.http_port = await self.http.start(
                self.config.host, self.config.http_port, self.config.grace_seconds
            )
        await self.server.start()
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._started = True
        if self.dispatcher is None or not self.dispatcher.awaiting_table():
            await self._serving()

    async def _serving(self) -> None:
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.state.ready = True

    def _table_adopted(self) -> None:
        """A pool agent that waited for its routing table can route now: SERVING."""
        if self._started and not self._stopping and not self.state.ready:
            task = asyncio.get_running_loop().create_task(self._serving())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _listen_unix(self, path: Path) -> None:
        """The unix socket: the same services (auth included) without TCP, for local clients.

        Connecting needs write permission on the socket file, so its mode is who may: created
        under a umask that leaves only `uds_mode` (never, even for an instant, open to every
        local user as the process umask would make it), then set to exactly that mode."""
        mode = self.config.uds_mode & 0o777
        if path.is_socket():
            path.unlink()  # left by an agent that did not stop cleanly
        old_umask = os.umask(~mode & 0o777)
        try:
            bound = self.server.add_insecure_port(f"unix:{path}")
        except RuntimeError as exc:
            raise OSError(f"cannot listen on unix:{path}: {exc}") from exc
        finally:
            os.umask(old_umask)
        if not bound:
            raise OSError(f"cannot listen on unix:{path}")
        os.chmod(path, mode)

    async def stop(self) -> None:
        """Health NOT_SERVING first, then let in-flight calls finish within the grace period."""
        self._stopping = True
        self.state.ready = False
        await self.health.enter_graceful_shutdown()
        stopping = [self.server.stop(self.config.grace_seconds)]
        if self.http is not None:
            stopping.append(self.http.stop())
        await asyncio.gather(*stopping)
        if self.generation_router is not None:
            await self.generation_router.close()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        self.shm.close()
        if self.config.uds is not None and self.config.uds.is_socket():
            self.config.uds.unlink()
        await self.lifecycle.close()
        self.tables.close()
        self.dataplane.close()
        if self._tmp is not None:
            self._tmp.cleanup()
