"""Where a pool's loop reads the cluster from: watch-fed caches, or a list per tick.

Each tick needs the pool's NodeStates (Nodes + its agent Pods), its EdgeModels and the
Secrets its auth names. :class:`WatchedSources` serves them from informers (informers.py)
shared by every pool this replica runs: one watch on Nodes, and per namespace one on the agent
Pods and one on EdgeModels, plus one per Secret a pool names (a `metadata.name` field
selector, so no other Secret reaches the operator). A tick with nothing new reads memory only,
and the derived NodeStates and parsed EdgeModels are rebuilt only when a cache's revision
moved. :class:`ListedSources` is the design this replaced (list everything every tick, re-read
Secrets every few seconds), kept behind `hatswarm-operator --reads list` so the fleet
benchmark can measure both in one run.

Both hand out the same projections (NodeView, PodView, ModelView) built by the same
functions, so the two paths differ only in how often they ask the API server.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from kubernetes.utils.quantity import parse_quantity

from hatswarm_operator.api import EdgeModel
from hatswarm_operator.api.common import GROUP, POOL_LABEL, VERSION
from hatswarm_operator.api.inferencepool import DEFAULT_NODE_MEMORY_RESERVE_MIB, InferencePool
from hatswarm_operator.api.manifests import ManifestError, parse_object
from hatswarm_operator.control.credentials import (
    AgentCredentials,
    agent_credentials,
    auth_secret_names,
)
from hatswarm_operator.core.inventory import ContainerCap, NodeState, memory_budget
from hatswarm_operator.kube import builders
from hatswarm_operator.kube.cluster import Cluster
from hatswarm_operator.kube.informers import Informer
from hatswarm_operator.kube.session import ApiSession

log = logging.getLogger("hatswarm.sources")

Obj = dict[str, Any]
SYNC_TIMEOUT_S = 30.0
"""How long a pool's first tick waits for a cache's first list before it skips the tick."""


# --- projections ---------------------------------------------------------------------------


def _condition(obj: Obj, type_: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


@dataclass(frozen=True)
class NodeView:
    """What the operator needs of a Node: a heartbeat that only moves timestamps is no change."""

    name: str
    labels: Mapping[str, str]
    ready: bool
    schedulable: bool
    memory_mib: int | None = None  # status.allocatable.memory; None: not reported


MIB = Decimal(1024 * 1024)
MAX_BYTES = Decimal(2**63 - 1)  # the API server's largest quantity: beyond it, not a node's memory


def memory_mib(quantity: object) -> int | None:
    """A memory quantity ("7901784Ki", "8Gi", "8G", "512Mi", "8589934592") in whole MiB,
    rounded down; None when there is none or it is not a quantity (the node then keeps
    the default budget: a malformed field must not empty a node). Parsed by the kubernetes
    client's `parse_quantity` (the operator depends on it already); what it accepts beyond
    the API server's own grammar (a negative, non-finite or absurd number) counts as none."""
    if quantity is None or isinstance(quantity, bool):
        return None
    try:
        value: Decimal = parse_quantity(quantity)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, ArithmeticError):
        return None
    if not value.is_finite() or value < 0 or value > MAX_BYTES:
        return None
    return int(value // MIB)


def node_view(obj: Obj) -> NodeView:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    return NodeView(
        name=str(meta.get("name")),
        labels=dict(meta.get("labels") or {}),
        ready=_condition(obj, "Ready") == "True",
        schedulable=not (obj.get("spec") or {}).get("unschedulable", False),
        memory_mib=memory_mib((status.get("allocatable") or {}).get("memory")),
    )


@dataclass(frozen=True)
class PodView:
    """An agent Pod: its pool, node and gRPC address ("" until it has an IP and a port)."""

    name: str
    pool: str
    node_name: str
    address: str
    ready: bool
    phase: str
    deleting: bool
    created: str


def _grpc_port(pod: Obj) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == "grpc" and p.get("containerPort"):
                return int(p["containerPort"])
    return None


def pod_view(obj: Obj) -> PodView:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ip, port = status.get("podIP"), _grpc_port(obj)
    address = ""
    if ip and port is not None:
        address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return PodView(
        name=str(meta.get("name")),
        pool=str((meta.get("labels") or {}).get(POOL_LABEL, "")),
        node_name=str(spec.get("nodeName") or ""),
        address=address,
        ready=_condition(obj, "Ready") == "True",
        phase=str(status.get("phase") or ""),
        deleting=bool(meta.get("deletionTimestamp")),
        created=str(meta.get("creationTimestamp") or ""),
    )


def node_states(
    nodes: Mapping[str, NodeView],
    pods: Iterable[PodView],
    memory_reserve_mib: int = DEFAULT_NODE_MEMORY_RESERVE_MIB,
    memory_cap: ContainerCap | None = None,
) -> list[NodeState]:
    """One NodeState per agent pod: where to probe it, and how Kubernetes sees its node.

    A pod counts when it has an IP and a container port named `grpc` and is not being
    deleted or finished. `k8s_ready` is the node's Ready condition and the pod's;
    `schedulable` is the node not being cordoned; `memory_mib` its allocatable memory less
    the pool's `memory_reserve_mib`, at most what the agent container may hold (`memory_cap`;
    inventory.memory_budget). The agent probe decides the rest.
    """
    out: dict[str, NodeState] = {}
    for pod in sorted(pods, key=lambda p: p.created):
        if not pod.node_name or not pod.address or pod.deleting:
            continue
        if pod.phase in ("Succeeded", "Failed"):
            continue
        node = nodes.get(pod.node_name)
        if node is None:
            continue
        uncapped = memory_budget(node.memory_mib, memory_reserve_mib)
        out[pod.node_name] = NodeState(
            name=pod.node_name,
            address=pod.address,
            labels=dict(node.labels),
            k8s_ready=node.ready and pod.ready,
            schedulable=node.schedulable,
            memory_mib=memory_budget(node.memory_mib, memory_reserve_mib, memory_cap),
            memory_cap=str(memory_cap) if memory_cap and memory_cap.budget_mib < uncapped else "",
        )
    return [out[k] for k in sorted(out)]


@dataclass(frozen=True)
class ModelView:
    """An EdgeModel, parsed once per change (None when its spec is invalid: the kopf handler
    reports that). `status` is the object's status as stored, to compare before patching."""

    resource_version: str
    name: str
    uid: str
    pool: str
    generation: int
    deleting: bool
    model: EdgeModel | None
    status: Obj | None


def model_view(obj: Obj) -> ModelView:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeModel", **obj}
    try:
        parsed = parse_object(body, "EdgeModel")
    except ManifestError:
        parsed = None
    return ModelView(
        resource_version=str(meta.get("resourceVersion") or ""),
        name=str(meta.get("name")),
        uid=str(meta.get("uid") or ""),
        pool=str(spec.get("pool") or ""),
        generation=int(meta.get("generation") or 0),
        deleting=bool(meta.get("deletionTimestamp")),
        model=parsed if isinstance(parsed, EdgeModel) else None,
        status=obj.get("status"),
    )


def pool_models(views: Iterable[ModelView], pool: str) -> list[EdgeModel]:
    """Valid, live EdgeModels of the pool, by name."""
    return [
        v.model
        for v in sorted(views, key=lambda v: v.name)
        if v.pool == pool and not v.deleting and v.model is not None
    ]


def secret_view(obj: Obj) -> dict[str, bytes]:
    return {str(k): base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}


# --- the two ways of reading ----------------------------------------------------------------


@dataclass
class PoolInputs:
    """What one tick reads. The same `revision` means the same inputs as last time."""

    nodes: list[NodeState]
    models: list[EdgeModel]
    uids: dict[str, str]
    revision: tuple[int, ...]


class Sources(Protocol):
    credentials_refresh_s: float
    """How often a pool re-reads its auth Secrets (0: every tick, they are in memory)."""

    async def read(
        self,
        namespace: str,
        pool: str,
        memory_reserve_mib: int = DEFAULT_NODE_MEMORY_RESERVE_MIB,
        memory_cap: ContainerCap | None = None,
    ) -> PoolInputs:
        """The pool's inputs; its nodes' memory budgets keep `memory_reserve_mib` back (the
        pool's spec.placement.nodeMemoryReserveMiB) and stay within `memory_cap` (its agent
        container's limit, inventory.container_cap); a new reserve or cap is a new revision."""
        ...

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes]: ...

    async def agent_credentials(self, pool: InferencePool) -> AgentCredentials: ...

    async def secret_value(self, namespace: str, name: str, key: str) -> str: ...

    def model_status(self, namespace: str, name: str) -> Obj | None: ...

    async def close(self) -> None: ...


async def _credentials(sources: Sources, pool: InferencePool) -> AgentCredentials:
    """What the operator presents to a pool's agents: its control token and TLS Secrets."""
    namespace = pool.metadata.namespace
    names = auth_secret_names(pool)
    secrets = {name: await sources.secret_data(namespace, name) for name in names}
    return agent_credentials(pool, secrets, lambda name: f"secret {namespace}/{name}")


class ListedSources:
    """The list-per-tick design: every read is a list call (kept for the fleet benchmark)."""

    credentials_refresh_s = 5.0

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._reads = 0

    async def read(
        self,
        namespace: str,
        pool: str,
        memory_reserve_mib: int = DEFAULT_NODE_MEMORY_RESERVE_MIB,
        memory_cap: ContainerCap | None = None,
    ) -> PoolInputs:
        nodes, pods, models = await asyncio.gather(
            self.cluster.nodes(),
            self.cluster.agent_pods(namespace, pool),
            self.cluster.edge_models(namespace),
        )
        views = [model_view(m) for m in models]
        self._reads += 1
        return PoolInputs(
            nodes=node_states(
                {n.name: n for n in map(node_view, nodes)},
                map(pod_view, pods),
                memory_reserve_mib,
                memory_cap,
            ),
            models=pool_models(views, pool),
            uids={v.name: v.uid for v in views},
            revision=(self._reads,),
        )

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        return await self.cluster.secret_data(namespace, name)

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        return await self.cluster.secret_value(namespace, name, key)

    async def agent_credentials(self, pool: InferencePool) -> AgentCredentials:
        return await _credentials(self, pool)

    def model_status(self, namespace: str, name: str) -> Obj | None:
        return None  # unknown: the sink patches whatever the loop says changed

    async def close(self) -> None:
        pass


class WatchedSources:
    """Informers shared by every pool of this replica; started on first use.

    `kick(namespace)` is called when something a pool of that namespace must act on now
    changed: an agent Pod, or an EdgeModel's spec or existence (not its status, which the
    pools themselves write).
    """

    credentials_refresh_s = 0.0  # Secrets come from watches: reading them costs nothing

    def __init__(
        self,
        session: ApiSession,
        *,
        kick: Callable[[str], None] = lambda ns: None,
        page_size: int = 500,
    ) -> None:
        self.session = session
        self.kick = kick
        self.page_size = page_size
        self.nodes: Informer[NodeView] = Informer(
            session, "/api/v1/nodes", node_view, page_size=page_size, name="nodes"
        )
        self.pods: dict[str, Informer[PodView]] = {}
        self.models: dict[str, Informer[ModelView]] = {}
        self.secrets: dict[tuple[str, str], Informer[dict[str, bytes]]] = {}
        self._derived: dict[tuple[str, str], PoolInputs] = {}

    def informers(self) -> list[Informer[Any]]:
        return [self.nodes, *self.pods.values(), *self.models.values(), *self.secrets.values()]

    def _namespace(self, namespace: str) -> tuple[Informer[PodView], Informer[ModelView]]:
        if namespace not in self.pods:
            self.pods[namespace] = Informer(
                self.session,
                f"/api/v1/namespaces/{namespace}/pods",
                pod_view,
                label_selector=f"{builders.NAME_LABEL}={builders.AGENT}",
                page_size=self.page_size,
                on_change=lambda: self.kick(namespace),
                name=f"agent pods in {namespace}",
            )
            self.models[namespace] = Informer(
                self.session,
                f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/edgemodels",
                model_view,
                page_size=self.page_size,
                name=f"edgemodels in {namespace}",
            )
            self.models[namespace].on_change = self._model_kick(namespace)
        for informer in (self.nodes, self.pods[namespace], self.models[namespace]):
            informer.start()
        return self.pods[namespace], self.models[namespace]

    def _model_kick(self, namespace: str) -> Callable[[], None]:
        """Kick the namespace's pools when a model's spec or existence changed."""
        seen: dict[str, tuple[int, bool]] = {}

        def changed() -> None:
            informer = self.models[namespace]
            now = {k: (v.generation, v.deleting) for k, v in informer.items.items()}
            if now != seen:
                seen.clear()
                seen.update(now)
                self.kick(namespace)

        return changed

    async def read(
        self,
        namespace: str,
        pool: str,
        memory_reserve_mib: int = DEFAULT_NODE_MEMORY_RESERVE_MIB,
        memory_cap: ContainerCap | None = None,
    ) -> PoolInputs:
        pods, models = self._namespace(namespace)
        for informer in (self.nodes, pods, models):
            if not await informer.wait_synced(SYNC_TIMEOUT_S):
                raise TimeoutError(f"{informer.name}: no first list within {SYNC_TIMEOUT_S}s")
        key = (
            self.nodes.revision,
            pods.revision,
            models.revision,
            memory_reserve_mib,
            hash(memory_cap),
        )
        derived = self._derived.get((namespace, pool))
        if derived is not None and derived.revision == key:
            return derived
        views = models.items.values()
        derived = self._derived[(namespace, pool)] = PoolInputs(
            nodes=node_states(
                self.nodes.items,
                [p for p in pods.items.values() if p.pool == pool],
                memory_reserve_mib,
                memory_cap,
            ),
            models=pool_models(views, pool),
            uids={v.name: v.uid for v in views},
            revision=key,
        )
        return derived

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        """A Secret's data from its own watch (started on first use); LookupError if absent."""
        informer = self.secrets.get((namespace, name))
        if informer is None:
            informer = self.secrets[(namespace, name)] = Informer(
                self.session,
                f"/api/v1/namespaces/{namespace}/secrets",
                secret_view,
                field_selector=f"metadata.name={name}",
                name=f"secret {namespace}/{name}",
            )
            informer.start()
        if not await informer.wait_synced(SYNC_TIMEOUT_S):
            raise LookupError(f"secret {namespace}/{name}: not readable (see the operator log)")
        data = informer.items.get(f"{namespace}/{name}")
        if data is None:
            raise LookupError(f"secret {namespace}/{name}: 404 Not Found")
        return data

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        data = await self.secret_data(namespace, name)
        if key not in data:
            raise LookupError(f"secret {namespace}/{name} has no key {key!r}")
        return data[key].decode().strip()

    async def agent_credentials(self, pool: InferencePool) -> AgentCredentials:
        return await _credentials(self, pool)

    def model_status(self, namespace: str, name: str) -> Obj | None:
        informer = self.models.get(namespace)
        view = informer.items.get(f"{namespace}/{name}") if informer is not None else None
        return view.status if view is not None else None

    async def close(self) -> None:
        for informer in self.informers():
            await informer.stop()
