"""The hatswarm operator's kopf handlers: thin adapters around the shared control loop.

Read top to bottom, this is the operator:

- startup: the cluster's agent defaults ($HATSWARM_AGENT_DEFAULTS), our own finalizer and progress-storage names under `hatswarm.io`, Events, peering,
  watch timeouts, one Kubernetes client for everything below;
- an InferencePool is parsed (an invalid one is a PermanentError, a Warning Event and a
  `Ready=False, reason=InvalidSpec` condition), and owns its generated token Secrets (the
  control token only its agents mount, and its clients' inference token unless it names its
  own: created when absent, never overwritten, so deleting one rotates it), its agent
  DaemonSet and its Service (created if absent, patched when their settings hash differs;
  deleted by Kubernetes' garbage collector through ownerReferences);
- an EdgeModel is parsed the same way (and also gets `phase: Failed`); the pool's daemon
  places it. Its finalizer unloads it from every agent of the pool before it goes away;
- one async daemon per InferencePool runs `PoolRuntime.tick` every `probeIntervalSeconds`
  (counted from each tick's start), while a task of its own follows every agent's status
  stream (WatchNodeStatus, HTTP/2 keepalive; a break is confirmed by one probe) and probes
  the agents without one once per interval, spread over it, `--fan-out` calls at a time; it
  kicks a tick when a node goes in or out of the pool. A tick: Nodes + agent Pods -> NodeStates, EdgeModels of the
  namespace -> plan, act, publish
  (status through `/status` when it changed, Events through the recorder: counted and
  aggregated like Kubernetes' own). The cluster is read from watch-fed caches shared by all
  pools (sources.py; `--reads list` brings back the old list-per-tick reads for comparison).
  Each pool has its own agent client carrying the pool's credentials (its control token,
  TLS), taken from the Secrets' caches so a rotated token is picked up (a deleted generated
  Secret is made anew);
- liveness probes report the pools being run and the loop's tick times and lag.

Only the replica that holds the peering lead runs daemons: kopf stops them on the others, so
the caches are filled (one list each) by whichever replica is acting.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import grpc
import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import GROUP, VERSION, SecretKeyRef
from hatswarm_operator.api.inferencepool import Auth
from hatswarm_operator.api.manifests import ManifestError, parse_object
from hatswarm_operator.control import metrics
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.credentials import AgentCredentials, generated_secrets, new_token
from hatswarm_operator.control.driver import Restarting, SkipTick, drive
from hatswarm_operator.control.runtime import PoolRuntime
from hatswarm_operator.core.conditions import rfc3339
from hatswarm_operator.core.inventory import container_cap
from hatswarm_operator.kube import builders
from hatswarm_operator.kube.cluster import Cluster
from hatswarm_operator.kube.events import EventRecorder
from hatswarm_operator.kube.loopstats import LoopStats, freeze_heap, quantile
from hatswarm_operator.kube.session import ApiSession
from hatswarm_operator.kube.sink import KubeSink
from hatswarm_operator.kube.sources import ListedSources, Sources, WatchedSources

log = logging.getLogger("hatswarm.operator")

FINALIZER = "hatswarm.io/finalizer"
AGENT_DEFAULTS_ENV = "HATSWARM_AGENT_DEFAULTS"  # a YAML file of spec.agent keys (the chart's)
POOLS = "inferencepools"
MODELS = "edgemodels"


@dataclass
class OperatorConfig:
    """What `hatswarm-operator` (main.py) decides before kopf starts; None = kopf's choice."""

    standalone: bool | None = None
    peering_name: str | None = None
    peering_lifetime_s: int | None = None
    agent_timeout_s: float = 1.0
    watch_server_timeout_s: int = 300
    reads: str = "watch"
    """"watch": watch-fed caches; "list": the loop before them (lists and probes every tick)."""
    fan_out: int = 64
    """Agent calls in flight at once per pool (probes, routing tables)."""
    agent_status: str = "stream"
    """"stream": follow agents over WatchNodeStatus (probe those without); "probe": probe all."""


CONFIG = OperatorConfig()
CREDENTIALS_REFRESH_S = ListedSources.credentials_refresh_s
"""How often a pool's daemon re-reads its auth Secrets with `--reads list` (a rotation shows
up within this); the watch-fed caches see a rotation as it happens."""


@dataclass
class PoolHandle:
    """What the other handlers may know about a running pool daemon."""

    runtime: PoolRuntime
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    last_tick: float = 0.0


# --- startup / cleanup / probes ----------------------------------------------------------


def _api_client() -> Any:
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return k8s.ApiClient(configuration)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING  # kopf's own log lines: only problems
    if CONFIG.peering_name is not None:
        settings.peering.name = CONFIG.peering_name
    if CONFIG.standalone is not None:
        settings.peering.standalone = CONFIG.standalone
    if CONFIG.peering_lifetime_s is not None:
        settings.peering.lifetime = CONFIG.peering_lifetime_s
    settings.watching.server_timeout = CONFIG.watch_server_timeout_s
    settings.watching.client_timeout = CONFIG.watch_server_timeout_s + 30
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    memo.agent_defaults = builders.load_agent_defaults(os.environ.get(AGENT_DEFAULTS_ENV))
    api_client = _api_client()
    memo.cluster = Cluster(api_client)
    memo.session = ApiSession(api_client.configuration)
    memo.pools = {}
    pools: dict[tuple[str, str], PoolHandle] = memo.pools

    def kick(namespace: str) -> None:
        for (ns, _), handle in list(pools.items()):
            if ns == namespace:
                handle.kick.set()

    memo.sources = (
        ListedSources(memo.cluster)
        if CONFIG.reads == "list"
        else WatchedSources(memo.session, kick=kick)
    )
    memo.recorder = EventRecorder(memo.session)
    memo.loopstats = LoopStats()
    memo.tasks = [
        asyncio.create_task(memo.recorder.run(), name="event recorder"),
        asyncio.create_task(memo.loopstats.sample_lag(), name="loop lag"),
    ]
    memo.frozen = False  # the heap is frozen after the first pool's first tick
    freeze_heap()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.tasks:
        task.cancel()
    await asyncio.gather(*memo.tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await memo.recorder.flush()
    await memo.sources.close()
    await memo.session.close()
    memo.cluster.api_client.close()


@kopf.on.probe(id="pools")
def pools_running(memo: kopf.Memo, **_: Any) -> dict[str, float]:
    """Seconds since each pool's last tick (liveness: a stuck loop shows up here)."""
    now = time.monotonic()
    pools: dict[tuple[str, str], PoolHandle] = getattr(memo, "pools", {})
    return {f"{ns}/{name}": round(now - h.last_tick, 3) for (ns, name), h in pools.items()}


@kopf.on.probe(id="loop")
def loop_health(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Tick times and event-loop lag over the last minute; what the caches did so far."""
    stats: LoopStats | None = getattr(memo, "loopstats", None)
    out: dict[str, Any] = stats.summary() if stats is not None else {}
    if stats is not None:
        out["last_10s"] = stats.summary(10.0)
        out["recent_ticks"] = stats.recent_ticks()
    sources = getattr(memo, "sources", None)
    if isinstance(sources, WatchedSources):
        out["informers"] = {
            i.name: {"items": len(i.items), "lists": i.stats.lists, "pages": i.stats.pages,
                     "watches": i.stats.watches, "events": i.stats.events,
                     "expired": i.stats.expired}
            for i in sources.informers()
        }  # fmt: skip
    recorder: EventRecorder | None = getattr(memo, "recorder", None)
    if recorder is not None:
        out["events"] = vars(recorder.stats)
    pools: dict[tuple[str, str], PoolHandle] = getattr(memo, "pools", {})
    out["probe_rounds"] = {
        f"{ns}/{name}": {
            "rounds": len(rounds := list(h.runtime.probe_rounds)[-60:]),
            "p50_s": round(quantile(rounds, 0.5), 4),
            "p99_s": round(quantile(rounds, 0.99), 4),
        }
        for (ns, name), h in pools.items()
    }
    out["plans"] = {
        f"{ns}/{name}": {
            "plans": len(plans := list(h.runtime.plan_seconds)[-60:]),
            "p50_s": round(quantile(plans, 0.5), 4),
            "p99_s": round(quantile(plans, 0.99), 4),
            "cpu_p50_s": round(quantile(cpu := list(h.runtime.plan_cpu_seconds)[-60:], 0.5), 4),
            "cpu_p99_s": round(quantile(cpu, 0.99), 4),
            "streamed": h.runtime.streamed(),
            "stream_breaks": h.runtime.stream_breaks,
        }
        for (ns, name), h in pools.items()
    }
    return out


# --- parsing -----------------------------------------------------------------------------


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy({k: body[k] for k in body})


def _invalid(body: kopf.Body, patch: kopf.Patch, err: ManifestError, kind: str) -> NoReturn:
    """Make an invalid spec visible (Event + condition) and stop retrying it."""
    message = str(err)
    metrics.RECONCILES.labels(kind=kind, trigger="handler", result="invalid").inc()
    kopf.warn(body, reason="InvalidSpec", message=message[:1024])
    patch.status["observedGeneration"] = body.metadata.get("generation")
    patch.status["conditions"] = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "InvalidSpec",
            "message": message,
            "lastTransitionTime": rfc3339(time.time()),
            "observedGeneration": body.metadata.get("generation"),
        }
    ]
    if kind == "EdgeModel":
        patch.status["phase"] = "Failed"
    raise kopf.PermanentError(message)


def parse_pool(
    body: Mapping[str, Any], agent_defaults: Mapping[str, Any] | None = None
) -> InferencePool:
    """The pool as the operator acts on it: parsed, with the cluster's agent defaults applied."""
    obj = parse_object(_plain(body), "InferencePool")
    assert isinstance(obj, InferencePool)
    return builders.apply_agent_defaults(obj, agent_defaults or {})


def parse_model(body: Mapping[str, Any]) -> EdgeModel:
    obj = parse_object(_plain(body), "EdgeModel")
    assert isinstance(obj, EdgeModel)
    return obj


# --- InferencePool: the agents and the entry point -----------------------------------------


@kopf.on.resume(GROUP, VERSION, POOLS)
@kopf.on.create(GROUP, VERSION, POOLS)
@kopf.on.update(GROUP, VERSION, POOLS)
async def reconcile_pool(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    try:
        pool = parse_pool(body, memo.agent_defaults)
    except ManifestError as err:
        _invalid(body, patch, err, "InferencePool")
    try:
        made = await ensure_generated_secrets(memo.cluster, pool, body)
    except LookupError as err:
        raise kopf.TemporaryError(str(err), delay=10) from err
    for name in made:
        logger.info(f"created Secret {name}")
        kopf.event(
            body,
            type="Normal",
            reason="Created",
            message=f"created Secret {name} (a generated token)",
        )
    for obj in (*builders.build_daemonsets(pool), builders.build_service(pool)):
        kopf.adopt(obj, owner=body)
        action = await memo.cluster.ensure(obj)
        if action:
            what = f"{obj['kind']} {obj['metadata']['name']}"
            logger.info(f"{action} {what}")
            # kopf.event: kopf.info would be dropped by posting.level (WARNING) set at startup
            kopf.event(body, type="Normal", reason=action.capitalize(), message=f"{action} {what}")
    uid = body.metadata.uid or ""
    for stale in builders.stale_daemonsets(pool):  # chip classes the pool no longer lists
        if await memo.cluster.delete_owned_daemonset(pool.metadata.namespace, stale, uid):
            logger.info(f"deleted DaemonSet {stale}")
            kopf.event(body, type="Normal", reason="Deleted", message=f"deleted DaemonSet {stale}")
    metrics.RECONCILES.labels(kind="InferencePool", trigger="handler", result="ok").inc()
    handle = memo.pools.get((pool.metadata.namespace, pool.metadata.name))
    if handle is not None:
        handle.kick.set()


# --- EdgeModel: validated here, placed by its pool's daemon ----------------------------------


@kopf.on.resume(GROUP, VERSION, MODELS)
@kopf.on.create(GROUP, VERSION, MODELS)
@kopf.on.update(GROUP, VERSION, MODELS)
async def check_model(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    try:
        model = parse_model(body)
    except ManifestError as err:
        _invalid(body, patch, err, "EdgeModel")
    if not body.status.get("phase"):
        patch.status["phase"] = "Pending"
    metrics.RECONCILES.labels(kind="EdgeModel", trigger="handler", result="ok").inc()
    handle = memo.pools.get((model.metadata.namespace, model.spec.pool))
    if handle is not None:
        handle.kick.set()


@kopf.on.delete(GROUP, VERSION, MODELS)
async def unload_model(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """The finalizer: unload every version of the model from every agent of its pool."""
    namespace = namespace or "default"
    pool = str(spec.get("pool", ""))
    handle: PoolHandle | None = memo.pools.get((namespace, pool))
    sources: Sources = memo.sources
    if handle is not None and handle.runtime.nodes:
        addresses = {n.name: n.address for n in handle.runtime.nodes.values()}
        agents, own_client = handle.runtime.client, False
    else:
        inputs = await sources.read(namespace, pool)
        addresses = {n.name: n.address for n in inputs.nodes}
        agents, own_client = AgentClient(timeout_s=CONFIG.agent_timeout_s), True
        if addresses:
            creds = await _pool_credentials(memo.cluster, sources, namespace, pool)
            await agents.set_credentials(creds)
    unloaded = []
    try:
        for node, address in sorted(addresses.items()):
            try:
                versions = await agents.unload(address, name, "")
            except grpc.aio.AioRpcError as err:
                # An agent that is down now gets the unload from its pool's loop when back.
                logger.warning(f"unload {name} from {node}: {err.code().name}")
                continue
            if versions:
                unloaded.append(f"{node} ({', '.join(versions)})")
    finally:
        if own_client:
            await agents.close()
    if unloaded:
        logger.info(f"unloaded {name} from {'; '.join(unloaded)}")
    metrics.RECONCILES.labels(kind="EdgeModel", trigger="handler", result="deleted").inc()
    if handle is not None:
        handle.kick.set()


# --- the pool's control loop ----------------------------------------------------------------


async def ensure_generated_secrets(
    cluster: Cluster,
    pool: InferencePool,
    owner: Mapping[str, Any],
    source: SecretSource | None = None,
) -> list[str]:
    """Create the pool's generated token Secrets that are absent (owned by the pool, so they
    go with it); the names created. LookupError when the API refuses.

    With `source` (the watch-fed caches), a Secret the cache holds is not asked for again:
    a quiet pool then makes no API read for its Secrets at all.
    """
    made = []
    for name in generated_secrets(pool):
        if source is not None:
            try:
                await source.secret_data(pool.metadata.namespace, name)
                continue  # present: nothing to create, nothing to read
            except LookupError:
                pass  # absent (or not readable yet): the API has the last word below
        obj = builders.build_token_secret(pool, name, new_token())
        kopf.adopt(obj, owner=owner)  # type: ignore[arg-type]
        try:
            if await cluster.create_secret_if_absent(obj):
                made.append(name)
        except ApiException as err:
            ns = pool.metadata.namespace
            raise LookupError(
                f"cannot create secret {ns}/{name}: {err.status} {err.reason}"
            ) from err
    return made


async def _pool_credentials(
    cluster: Cluster, sources: Sources, namespace: str, pool: str
) -> AgentCredentials:
    """Credentials for a pool's agents when only its name is known (none if it is gone)."""
    body = await cluster.inference_pool(namespace, pool)
    if body is None:
        return AgentCredentials()
    try:
        parsed = parse_pool(body)
    except ManifestError:
        return AgentCredentials()
    try:
        return await sources.agent_credentials(parsed)
    except LookupError as err:
        log.warning("credentials of pool %s/%s: %s", namespace, pool, err)
        return AgentCredentials()


class SecretSource(Protocol):
    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes]: ...


class CredentialSource(SecretSource, Protocol):
    async def agent_credentials(self, pool: InferencePool) -> AgentCredentials: ...


@dataclass
class CredentialsRefresh:
    """Re-reads a pool's credential Secrets into its agent client every `every_s` seconds
    (`CREDENTIALS_REFRESH_S` when they come from API reads; every tick from the caches),
    re-creating a generated one found deleted (a rotation).

    A Secret that cannot be read keeps the last good credentials (the agents keep their
    mounted files too) and is reported once per distinct problem.
    """

    client: AgentClient
    auth: Auth | None = None
    read_at: float = float("-inf")
    problem: str = ""
    clock: Callable[[], float] = time.monotonic
    every_s: float = CREDENTIALS_REFRESH_S

    async def __call__(
        self,
        source: CredentialSource,
        namespace: str,
        pool: InferencePool,
        cluster: Cluster | None = None,
        owner: Mapping[str, Any] | None = None,
    ) -> str:
        """'' when the client is up to date, else the problem to report (once).

        `cluster` and `owner` (the pool's body): given, missing generated Secrets are created
        first.
        """
        auth = pool.spec.auth
        now = self.clock()
        if auth == self.auth and now - self.read_at < self.every_s:
            return ""
        try:
            if cluster is not None and owner is not None:
                await ensure_generated_secrets(cluster, pool, owner, source)
            creds = await source.agent_credentials(pool)
        except LookupError as err:
            self.read_at = now
            if self.auth != auth:  # new settings we cannot honour yet: read again next tick
                self.read_at = float("-inf")
            message = f"agent credentials: {err}"
            if message == self.problem:
                return ""
            self.problem = message
            return message
        await self.client.set_credentials(creds)
        self.auth, self.read_at, self.problem = auth, now, ""
        return ""


async def _wait(handle: PoolHandle, stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Sleep until the next tick: the interval, a kick (spec change) or the daemon stopping."""
    kick = asyncio.ensure_future(handle.kick.wait())
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({kick, stop}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (kick, stop):
            t.cancel()
        await asyncio.gather(kick, stop, return_exceptions=True)
    handle.kick.clear()


@kopf.daemon(GROUP, VERSION, POOLS, cancellation_timeout=10)
async def run_pool(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Probe, plan, converge and publish one pool every probeIntervalSeconds, until deleted."""
    namespace = namespace or "default"
    sources: Sources = memo.sources
    stats: LoopStats = memo.loopstats

    async def public_key(ns: str, ref: SecretKeyRef) -> str:
        return await sources.secret_value(ns, ref.name, ref.key)

    def stored_status(kind: str, ns: str, obj_name: str) -> dict[str, Any] | None:
        if kind == "InferencePool":
            return copy.deepcopy(dict(body.get("status") or {}))
        return sources.model_status(ns, obj_name)

    sink = KubeSink(memo.cluster, name, memo.recorder, stored_status=stored_status)
    agents = AgentClient(timeout_s=CONFIG.agent_timeout_s)
    refresh = CredentialsRefresh(agents, every_s=sources.credentials_refresh_s)
    # `--reads list` runs the loop as it was before the caches, for the fleet benchmark's
    # comparison: lists every tick, every agent probed at once inside the tick, the interval
    # counted from the tick's end.
    legacy = CONFIG.reads == "list"
    fan = 1_000_000 if legacy else CONFIG.fan_out
    runtime = PoolRuntime(agents, sink, resolve_public_key=public_key, fan_out=fan)
    handle = PoolHandle(runtime)
    memo.pools[(namespace, name)] = handle
    interval = 5.0
    threshold = 3
    failovers = 0
    seen: tuple[int, ...] = ()
    parsed: tuple[str, InferencePool] | None = None
    tick_started = time.monotonic()

    async def tick() -> None:
        nonlocal interval, threshold, seen, parsed, tick_started
        tick_started = time.monotonic()
        # `body` is live in daemons: spec edits show up here without a restart. It is parsed
        # again only when it changed (its status lists every node: not a per-tick parse).
        version = str(body.metadata.get("resourceVersion") or "")
        if parsed is None or parsed[0] != version or not version:
            try:
                parsed = (version, parse_pool(body, memo.agent_defaults))
            except ManifestError:
                raise SkipTick(5.0) from None
        pool = parsed[1]
        interval = pool.spec.failure_detection.probe_interval_seconds
        threshold = pool.spec.failure_detection.failure_threshold
        sink.service = builders.service_address(pool)
        problem = await refresh(sources, namespace, pool, memo.cluster, body)
        if problem:
            logger.warning(problem)
            kopf.warn(body, reason="CredentialsUnavailable", message=problem[:1024])
        started = time.monotonic()
        with metrics.PLACEMENT_SECONDS.time():
            try:
                reserve = pool.spec.placement.node_memory_reserve_mi_b
                inputs = await sources.read(namespace, name, reserve, container_cap(pool))
            except TimeoutError as err:
                logger.warning(f"cluster caches not ready: {err}")
                raise SkipTick(5.0) from None
            if inputs.revision != seen:  # the caches moved: new nodes, pods or models
                seen = inputs.revision
                sink.uids = {("InferencePool", name): body.metadata.uid or ""}
                sink.uids.update({("EdgeModel", m): uid for m, uid in inputs.uids.items()})
                runtime.set_nodes(inputs.nodes)
            await runtime.tick(pool, inputs.models, probe=legacy)
        stats.tick(time.monotonic() - started)

    def record(ok: bool) -> None:
        nonlocal failovers
        if ok and not memo.frozen:
            memo.frozen = True
            freeze_heap()
        result = "ok" if ok else "error"
        metrics.RECONCILES.labels(kind="InferencePool", trigger="loop", result=result).inc()
        handle.last_tick = time.monotonic()
        up = sum(1 for n in runtime.nodes.values() if n.in_pool)
        metrics.set_pool_nodes(namespace, name, up, len(runtime.nodes) - up)
        if runtime.failovers > failovers:
            metrics.FAILOVERS.inc(runtime.failovers - failovers)
            failovers = runtime.failovers

    async def pause(seconds: float) -> bool:
        """Until the next tick: the interval counts from this tick's start, so a slow tick
        (a thousand probes) does not stretch the probe period, and failure detection."""
        if stopped:
            return False
        elapsed = 0.0 if legacy else time.monotonic() - tick_started
        await _wait(handle, stopped, max(0.0, seconds - elapsed))
        return not stopped

    def prober_ended(error: BaseException | None) -> None:
        why = f"{type(error).__name__}: {error}" if error is not None else "it returned"
        logger.error(f"the node prober ended ({why}); started again")
        metrics.PROBER_RESTARTS.inc()
        kopf.warn(body, reason="ProberRestarted", message=f"node prober ended: {why}"[:1024])

    # The agents are probed apart from the ticks, spread over each interval; a node that
    # crosses the failure threshold kicks a tick at once. Should the prober end, it restarts.
    prober = Restarting(
        lambda: runtime.probe_forever(
            lambda: threshold,
            lambda: interval,
            handle.kick.set,
            watch=CONFIG.agent_status == "stream",
        ),
        name=f"probes of {namespace}/{name}",
        backoff=lambda: interval,
        on_restart=prober_ended,
    )
    if not legacy:
        prober.start()
    try:
        if not stopped:
            await drive(
                tick, interval=lambda: interval, pause=pause, logger=logger, on_result=record
            )
    finally:
        await prober.stop()
        if memo.pools.get((namespace, name)) is handle:
            del memo.pools[(namespace, name)]
        metrics.forget_pool(namespace, name)
        with contextlib.suppress(Exception):
            await runtime.close()
        with contextlib.suppress(Exception):
            await agents.close()
