"""Replica placement for an inference pool: a pure function from pool state to an assignment.

Plain frozen dataclasses in, plain frozen dataclasses out, no I/O: the kopf operator and the
local mode each adapt their own types into these, and the decision itself is unit- and
property-tested without a cluster. The same input (in any order) always gives the same output.

Rules, in the order they bind:

- A replica goes only where it can run: the node matches the model's node selector and the
  model has an artifact for the node's accelerator, or a ``cpu`` artifact (which runs on any
  node's CPU). Where a node could run both, the NPU artifact wins, always: a full NPU does not
  turn the node into a CPU host for that model, so a replica never flips runtime with load.
- At most one replica of a model per node; never beyond a node's memory or NPU contexts,
  counting everything already placed. A CPU replica takes no NPU context. A replica takes the
  memory its artifact declares (a generative model's build: weights and KV cache), else the
  model's per-replica figure.
- A generative or embedding model (``task`` other than ``tensor``) never runs on a Hailo-8 or
  Hailo-8L NPU (no generative runtime there): its artifacts for those chips are ignored, so such
  a node runs its CPU build, if it has one; a Hailo-10H node runs its HEF.
- Stability first: a current replica that is still valid stays where it is (even on a cordoned
  node: ``schedulable=False`` means "take nothing new", not "drain"). A node that can no longer
  serve must be left out of ``nodes``; only its replicas then move. Kept replicas are never
  rebalanced, so adding a node or an unrelated model moves nothing.
- New replicas spread over the model's spread key (max skew 1 among the domains that still have
  room, like a topologySpreadConstraint at scheduling time), then go to the node where this
  model runs fastest (measured fps, never TOPS), then the least loaded, then by name.
- Under contention models take turns, one replica each per round, most constrained first, so
  every model gets its first replica before any gets its second.
- Every model left short gets an :class:`Unplaced` with a reason code and a message.

Cost: O(total candidates) to build per-model, per-domain heaps once, then
O(domains * log nodes) per replica with lazily refreshed keys (a node's load only grows and its
free room only shrinks during one call, so stale heap entries are fixed or dropped on sight).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

CPU = "cpu"
"""The accelerator kind of a CPU artifact, and of a node without an NPU."""
TENSOR = "tensor"
"""The task of a fixed-shape tensor model (classifier, detector): runs on every accelerator."""
NO_GENERATIVE_RUNTIME = frozenset({"hailo8", "hailo8l"})
"""NPUs a generative or embedding model never runs on (HailoRT's GenAI API is Hailo-10H only)."""

DEFAULT_FPS: Mapping[str, float] = MappingProxyType(
    {"hailo8": 400.0, "hailo10h": 250.0, "hailo8l": 150.0, CPU: 15.0}
)
"""Fallback throughput per accelerator when neither the node nor the artifact has a measured
figure (the order of magnitude of hailo_model_zoo batch-1 results for yolov8s/resnet50; the
Hailo-10H's HAILO10H tables: yolov8s 161, resnet_v1_50 310 FPS)."""


class Reason(StrEnum):
    """Why a model is short of its desired replicas (stable codes for conditions and Events)."""

    SELECTOR_MATCHES_NOTHING = "SelectorMatchesNothing"
    NO_ACCELERATOR_ARTIFACT = "NoAcceleratorArtifact"
    NO_SCHEDULABLE_NODE = "NoSchedulableNode"
    TOO_FEW_NODES = "TooFewNodes"
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"


@dataclass(frozen=True, slots=True)
class Node:
    """A pool node as placement sees it: what it runs on, its labels and its capacity.

    ``memory_mib`` and ``npu_contexts`` are what the pool may use in total on this node; replicas
    placed on it (kept or new) count against them.
    """

    name: str
    accelerator: str
    memory_mib: int
    npu_contexts: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    schedulable: bool = True


@dataclass(frozen=True, slots=True)
class Artifact:
    """A model build for one accelerator kind (``hef`` for a Hailo chip, ``onnx`` for ``cpu``)."""

    accelerator: str
    format: str = ""
    uri: str = ""
    sha256: str = ""
    fps: float | None = None
    """Measured inferences/s at batch 1 on this accelerator, if known."""
    memory_mib: int | None = None
    """Memory a replica of this build takes, if declared; else the model's ``memory_mib``."""

    def identity(self) -> tuple[str, str, str, str]:
        """What a node must reload when it changes (a new fps figure is not a reload)."""
        return (self.accelerator, self.format, self.uri, self.sha256)


@dataclass(frozen=True, slots=True)
class Model:
    """A model to place: its artifacts, replica count, per-replica needs and constraints."""

    name: str
    artifacts: tuple[Artifact, ...]
    replicas: int
    memory_mib: int
    npu_contexts: int = 1
    """NPU contexts per replica on an NPU artifact; a CPU replica takes none."""
    version: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    spread_key: str | None = None
    fps_by_node: Mapping[str, float] = field(default_factory=dict)
    """Throughput measured for this model on given nodes; beats the artifact's figure."""
    task: str = TENSOR
    """``tensor``, ``generate`` or ``embed``: the last two never use a Hailo-8/8L artifact."""


@dataclass(frozen=True, slots=True)
class Replica:
    """One placed replica; ``weight`` is the node's throughput for the model (for routers)."""

    model: str
    node: str
    artifact: Artifact
    weight: float
    version: str = ""


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A model placed short of its desired replicas, with the reason."""

    model: str
    reason: Reason
    message: str
    placed: int
    desired: int
    short_of_memory: int = 0
    """Nodes that could run it but lack the memory for a replica (INSUFFICIENT_CAPACITY)."""

    def with_caps(self, caps: Sequence[str]) -> str:
        """The message, and when it is short of memory on nodes whose budget the agent
        container's limit set (`caps`, inventory.ContainerCap as text), that limit: the node has
        room, its agent container does not (raise the limit, not the node)."""
        if not self.short_of_memory or not caps:
            return self.message
        return f"{self.message}; {'; '.join(caps)}"


@dataclass(frozen=True, slots=True)
class Placement:
    """The result: replicas sorted by (model, node), shortfalls sorted by model."""

    replicas: tuple[Replica, ...]
    unplaced: tuple[Unplaced, ...]

    def by_node(self) -> dict[str, tuple[Replica, ...]]:
        """Replicas per node (nodes without any are absent), nodes in name order."""
        out: dict[str, list[Replica]] = {}
        for r in sorted(self.replicas, key=lambda r: (r.node, r.model)):
            out.setdefault(r.node, []).append(r)
        return {node: tuple(rs) for node, rs in out.items()}

    def assignment(self) -> dict[str, tuple[str, ...]]:
        """Model -> nodes it is on: the ``current`` argument of the next :func:`place`."""
        out: dict[str, list[str]] = {}
        for r in self.replicas:
            out.setdefault(r.model, []).append(r.node)
        return {model: tuple(nodes) for model, nodes in out.items()}


@dataclass(frozen=True, slots=True)
class NodeChanges:
    """What one node's agent must do to go from the old to the new placement."""

    loads: tuple[Replica, ...]
    unloads: tuple[Replica, ...]


Current = Placement | Mapping[str, Iterable[str]]


def place(
    nodes: Iterable[Node],
    models: Iterable[Model],
    current: Current | None = None,
    *,
    default_fps: Mapping[str, float] = DEFAULT_FPS,
) -> Placement:
    """Place every model's replicas on the pool, keeping valid ``current`` replicas in place.

    ``current`` is either a previous :class:`Placement` or a mapping model name -> node names.
    Raises ``ValueError`` on duplicate names or negative counts (an adapter bug, not a state).
    """
    node_list = sorted(nodes, key=lambda n: n.name)
    model_list = sorted(models, key=lambda m: m.name)
    _validate(node_list, model_list)
    pool = _Pool(node_list)
    cur = _normalise(current)

    plans = [_Plan(m, pool, default_fps) for m in model_list]
    for plan in plans:
        plan.choose_kept(cur.get(plan.model.name, ()))
    # Kept replicas claim capacity first, in (model, node) order; any that no longer fit move.
    for plan in plans:
        plan.claim_kept()
    for plan in plans:
        plan.build_heaps()

    pending = sorted(
        (p for p in plans if p.missing() > 0), key=lambda p: (p.candidate_count, p.model.name)
    )
    while pending:
        still: list[_Plan] = []
        for plan in pending:
            if plan.take_one() and plan.missing() > 0:
                still.append(plan)
        pending = still

    replicas = tuple(r for plan in plans for r in plan.replicas())
    unplaced = tuple(u for plan in plans if (u := plan.explain()) is not None)
    return Placement(replicas=replicas, unplaced=unplaced)


def diff(
    old: Placement | Iterable[Replica], new: Placement | Iterable[Replica]
) -> dict[str, NodeChanges]:
    """Loads and unloads per node (only nodes with changes, in name order).

    A replica changes when its model, version or artifact changes on a node; a new routing
    weight alone is not a change. The agent should unload before it loads, to free room.
    """
    old_rs = old.replicas if isinstance(old, Placement) else tuple(old)
    new_rs = new.replicas if isinstance(new, Placement) else tuple(new)

    def key(r: Replica) -> tuple[str, str, str, tuple[str, str, str, str]]:
        return (r.node, r.model, r.version, r.artifact.identity())

    old_keys = {key(r) for r in old_rs}
    new_keys = {key(r) for r in new_rs}
    loads: dict[str, list[Replica]] = {}
    unloads: dict[str, list[Replica]] = {}
    for r in new_rs:
        if key(r) not in old_keys:
            loads.setdefault(r.node, []).append(r)
    for r in old_rs:
        if key(r) not in new_keys:
            unloads.setdefault(r.node, []).append(r)

    def order(rs: list[Replica]) -> tuple[Replica, ...]:
        return tuple(sorted(rs, key=lambda r: (r.model, r.version, r.artifact.identity())))

    return {
        node: NodeChanges(loads=order(loads.get(node, [])), unloads=order(unloads.get(node, [])))
        for node in sorted(loads.keys() | unloads.keys())
    }


# --- internals ------------------------------------------------------------------------------


def _validate(nodes: list[Node], models: list[Model]) -> None:
    for kind, names in (("node", [n.name for n in nodes]), ("model", [m.name for m in models])):
        dup = sorted(name for name, k in Counter(names).items() if k > 1)
        if dup:
            raise ValueError(f"duplicate {kind} names: {', '.join(dup)}")
    for n in nodes:
        if n.memory_mib < 0 or n.npu_contexts < 0:
            raise ValueError(f"node {n.name}: negative capacity")
    for m in models:
        if m.replicas < 0 or m.memory_mib < 0 or m.npu_contexts < 0:
            raise ValueError(f"model {m.name}: negative replicas or resources")
        if any(a.memory_mib is not None and a.memory_mib < 0 for a in m.artifacts):
            raise ValueError(f"model {m.name}: an artifact with negative memory")


def _normalise(current: Current | None) -> dict[str, frozenset[str]]:
    if current is None:
        return {}
    if isinstance(current, Placement):
        current = current.assignment()
    return {model: frozenset(nodes) for model, nodes in current.items()}


class _Pool:
    """Mutable capacity bookkeeping over nodes indexed in name order (index = tie-break)."""

    __slots__ = (
        "accel",
        "by_accel",
        "cap_ctx",
        "cap_mem",
        "domain_cache",
        "free_ctx",
        "free_mem",
        "index",
        "label_index",
        "load",
        "nodes",
        "schedulable",
    )

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.index = {n.name: i for i, n in enumerate(nodes)}
        self.accel = [n.accelerator for n in nodes]
        self.schedulable = [n.schedulable for n in nodes]
        self.cap_mem = [n.memory_mib for n in nodes]
        self.cap_ctx = [n.npu_contexts for n in nodes]
        self.free_mem = list(self.cap_mem)
        self.free_ctx = list(self.cap_ctx)
        self.load = [0.0] * len(nodes)
        self.by_accel: dict[str, list[int]] = {}
        self.label_index: dict[tuple[str, str], set[int]] = {}
        self.domain_cache: dict[str | None, list[str]] = {}
        for i, n in enumerate(nodes):
            self.by_accel.setdefault(n.accelerator, []).append(i)
            for kv in n.labels.items():
                self.label_index.setdefault(kv, set()).add(i)

    def selected(self, selector: Mapping[str, str]) -> set[int] | None:
        """Node indexes matching every selector label; None means all nodes."""
        if not selector:
            return None
        sets = sorted((self.label_index.get(kv, set()) for kv in selector.items()), key=len)
        out = set(sets[0])
        for s in sets[1:]:
            out &= s
        return out

    def domains(self, key: str | None) -> list[str]:
        """Each node's spread domain under a label key ("" without the label or the key)."""
        cached = self.domain_cache.get(key)
        if cached is None:
            if key is None:
                cached = [""] * len(self.nodes)
            else:
                cached = [n.labels.get(key, "") for n in self.nodes]
            self.domain_cache[key] = cached
        return cached

    def fits(self, i: int, mem: int, ctx: int) -> bool:
        return self.free_mem[i] >= mem and self.free_ctx[i] >= ctx

    def take(self, i: int, mem: int, ctx: int) -> None:
        self.free_mem[i] -= mem
        self.free_ctx[i] -= ctx
        cm, cc = self.cap_mem[i], self.cap_ctx[i]
        mem_share = (cm - self.free_mem[i]) / cm if cm else 1.0
        ctx_share = (cc - self.free_ctx[i]) / cc if cc else 0.0
        self.load[i] = max(mem_share, ctx_share)


# A heap entry: (-fps, load when pushed, node index, NPU contexts, memory needed there).
_Entry = tuple[float, float, int, int, int]


class _Plan:
    """One model's placement state during a :func:`place` call."""

    def __init__(self, model: Model, pool: _Pool, default_fps: Mapping[str, float]) -> None:
        self.model = model
        self.pool = pool
        self.default_fps = default_fps
        # Per accelerator kind, the artifact to use (first by identity if several).
        arts: dict[str, Artifact] = {}
        for a in sorted(model.artifacts, key=_artifact_order):
            if model.task != TENSOR and a.accelerator in NO_GENERATIVE_RUNTIME:
                continue  # the API refuses these; a hand-made Model gets the same rule
            arts.setdefault(a.accelerator, a)
        self.arts = arts
        self.cpu_art = arts.get(CPU)
        self.selected = pool.selected(model.node_selector)
        self.on: dict[int, Artifact] = {}  # node index -> artifact of the replica there
        self.domain_count: Counter[str] = Counter()
        self.heaps: dict[str, list[_Entry]] = {}
        self.candidate_count = 0

    # -- what may run where ---------------------------------------------------------------

    def artifact_on(self, i: int) -> Artifact | None:
        """The artifact this model would run on node i (NPU first), ignoring the selector."""
        return self.arts.get(self.pool.accel[i]) or self.cpu_art

    def compatible(self) -> list[int]:
        """Nodes matching the selector that have an artifact to run, in name order."""
        pool = self.pool
        if self.cpu_art is not None:
            base: Iterable[int] = range(len(pool.nodes))
        else:
            idx: list[int] = []
            for accel in self.arts:
                idx.extend(pool.by_accel.get(accel, ()))
            base = sorted(idx)
        if self.selected is None:
            return list(base)
        sel = self.selected
        if isinstance(base, range):
            return sorted(sel)
        return [i for i in base if i in sel]

    def ctx_need(self, art: Artifact) -> int:
        return 0 if art.accelerator == CPU else self.model.npu_contexts

    def mem_need(self, art: Artifact) -> int:
        return self.model.memory_mib if art.memory_mib is None else art.memory_mib

    def _artifact_fps(self, art: Artifact) -> float:
        if art.fps is not None:
            return art.fps
        return self.default_fps.get(art.accelerator, 1.0)

    def fps(self, i: int, art: Artifact) -> float:
        """This model's throughput on node i: measured there, else the artifact's, else default."""
        measured = self.model.fps_by_node.get(self.pool.nodes[i].name)
        return measured if measured is not None else self._artifact_fps(art)

    def domain(self, i: int) -> str:
        return self.pool.domains(self.model.spread_key)[i]

    def missing(self) -> int:
        return self.model.replicas - len(self.on)

    # -- kept replicas ----------------------------------------------------------------------

    def choose_kept(self, nodes_now: Iterable[str]) -> None:
        """Keep current replicas that may still run there; trim to the desired count."""
        pool = self.pool
        valid: dict[int, Artifact] = {}
        for name in nodes_now:
            i = pool.index.get(name)
            if i is None or (self.selected is not None and i not in self.selected):
                continue
            art = self.artifact_on(i)
            if art is not None:
                valid[i] = art
        excess = len(valid) - self.model.replicas
        if excess > 0:
            counts = Counter(self.domain(i) for i in valid)
            for _ in range(excess):
                # Drop from the fullest domain its slowest node (then the last by name).
                worst = max(
                    valid,
                    key=lambda i: (counts[self.domain(i)], -self.fps(i, valid[i]), i),
                )
                counts[self.domain(worst)] -= 1
                del valid[worst]
        self.on = dict(sorted(valid.items()))

    def claim_kept(self) -> None:
        pool = self.pool
        for i, art in list(self.on.items()):
            ctx, mem = self.ctx_need(art), self.mem_need(art)
            if pool.fits(i, mem, ctx):
                pool.take(i, mem, ctx)
                self.domain_count[self.domain(i)] += 1
            else:
                del self.on[i]

    # -- new replicas -----------------------------------------------------------------------

    def build_heaps(self) -> None:
        """Per spread domain, a heap of the schedulable nodes this model could still take."""
        if self.missing() <= 0:
            return
        pool = self.pool
        # Everything that depends only on the accelerator kind, computed once per model.
        per_accel: dict[str, tuple[float, int, int]] = {}
        for accel in pool.by_accel:
            art = self.arts.get(accel) or self.cpu_art
            if art is not None:
                per_accel[accel] = (
                    -self._artifact_fps(art),
                    self.ctx_need(art),
                    self.mem_need(art),
                )
        measured = {
            pool.index[name]: -fps
            for name, fps in self.model.fps_by_node.items()
            if name in pool.index
        }
        domains = pool.domains(self.model.spread_key)
        accels, schedulable, load, on = pool.accel, pool.schedulable, pool.load, self.on
        heaps: dict[str, list[_Entry]] = {}
        count = 0
        for i in self.compatible():
            if not schedulable[i] or i in on:
                continue
            neg_fps, ctx, mem = per_accel[accels[i]]
            if measured:
                neg_fps = measured.get(i, neg_fps)
            entry = (neg_fps, load[i], i, ctx, mem)
            heap = heaps.get(domains[i])
            if heap is None:
                heaps[domains[i]] = [entry]
            else:
                heap.append(entry)
            count += 1
        for h in heaps.values():
            heapq.heapify(h)
        self.heaps = heaps
        self.candidate_count = count

    def _top(self, heap: list[_Entry]) -> _Entry | None:
        """The best node of a domain that still fits, refreshing stale loads on the way."""
        pool = self.pool
        free_mem, free_ctx, load = pool.free_mem, pool.free_ctx, pool.load
        while heap:
            neg_fps, pushed_load, i, ctx, mem = heap[0]
            if free_mem[i] < mem or free_ctx[i] < ctx:
                heapq.heappop(heap)  # room only shrinks within a call: never fits again
            elif load[i] != pushed_load:
                heapq.heapreplace(heap, (neg_fps, load[i], i, ctx, mem))
            else:
                return heap[0]
        return None

    def take_one(self) -> bool:
        """Place one more replica; False when no node can take it (nor ever will this call)."""
        best: tuple[int, _Entry, str] | None = None
        counts = self.domain_count
        # Fewest replicas first (the spread), so domains past the first full count are skipped.
        for dom in sorted(self.heaps, key=lambda d: (counts[d], d)):
            if best is not None and counts[dom] > best[0]:
                break
            top = self._top(self.heaps[dom])
            if top is None:
                del self.heaps[dom]
                continue
            if best is None or top < best[1]:
                best = (counts[dom], top, dom)
        if best is None:
            return False
        _, (_, _, i, ctx, mem), dom = best
        heapq.heappop(self.heaps[dom])
        art = self.artifact_on(i)
        assert art is not None
        self.pool.take(i, mem, ctx)
        self.on[i] = art
        self.domain_count[dom] += 1
        return True

    # -- output -----------------------------------------------------------------------------

    def replicas(self) -> list[Replica]:
        m, nodes = self.model, self.pool.nodes
        return [
            Replica(
                model=m.name,
                node=nodes[i].name,
                artifact=art,
                weight=self.fps(i, art),
                version=m.version,
            )
            for i, art in sorted(self.on.items())
        ]

    def explain(self) -> Unplaced | None:
        m, pool = self.model, self.pool
        placed = len(self.on)
        if placed >= m.replicas:
            return None

        def short(reason: Reason, message: str) -> Unplaced:
            return Unplaced(m.name, reason, message, placed=placed, desired=m.replicas)

        if self.selected is not None and not self.selected:
            return short(Reason.SELECTOR_MATCHES_NOTHING, self._selector_message())
        compatible = self.compatible()
        if not compatible:
            scope = range(len(pool.nodes)) if self.selected is None else sorted(self.selected)
            has = ", ".join(
                f"{a.format}/{a.accelerator}" if a.format else a.accelerator
                for a in sorted(self.arts.values(), key=Artifact.identity)
            )
            where = "pool has" if self.selected is None else "nodes matching the selector have"
            ignored = sorted({a.accelerator for a in m.artifacts} - set(self.arts))
            why = f"; task {m.task} ignores {', '.join(ignored)}" if ignored else ""
            return short(
                Reason.NO_ACCELERATOR_ARTIFACT,
                "no node with an accelerator the model has an artifact for "
                f"(has: {has or 'none'}{why}; {where}: {_kinds(pool, scope)})",
            )
        eligible = [i for i in compatible if pool.schedulable[i] or i in self.on]
        if not eligible:
            return short(
                Reason.NO_SCHEDULABLE_NODE,
                f"all {len(compatible)} nodes that can run it are unschedulable "
                f"({_kinds(pool, compatible)})",
            )
        if placed < len(eligible):
            rest = [i for i in eligible if i not in self.on]
            short_mem = short_ctx = 0
            most_free = 0
            needs: dict[str, int] = {}
            for i in rest:
                art = self.artifact_on(i)
                if art is None:
                    continue
                needs[art.accelerator] = self.mem_need(art)
                short_mem += pool.free_mem[i] < self.mem_need(art)
                short_ctx += pool.free_ctx[i] < self.ctx_need(art)
                most_free = max(most_free, pool.free_mem[i])
            memory = ", ".join(f"{mib} MiB on {accel}" for accel, mib in sorted(needs.items()))
            # The most free memory on one node says how far off the model is (a node's budget
            # is its allocatable memory less the pool's reserve: a 2 GB Pi offers ~1.3 GB).
            most = f" (at most {most_free} MiB free on one)" if short_mem else ""
            message = (
                f"placed {placed} of {m.replicas}: none of the {len(rest)} other nodes that can "
                f"run it has room for a replica ({memory}, {m.npu_contexts} NPU "
                f"context(s) on an NPU): {short_mem} short of memory{most}, {short_ctx} short "
                "of NPU contexts"
            )
            return Unplaced(
                m.name,
                Reason.INSUFFICIENT_CAPACITY,
                message,
                placed=placed,
                desired=m.replicas,
                short_of_memory=short_mem,
            )
        return short(
            Reason.TOO_FEW_NODES,
            f"placed {placed} of {m.replicas}: at most one replica per node and only "
            f"{len(eligible)} nodes can run it ({_kinds(pool, eligible)})",
        )

    def _selector_message(self) -> str:
        sel = self.model.node_selector
        wanted = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
        present = []
        for k in sorted(sel):
            values = sorted({n.labels[k] for n in self.pool.nodes if k in n.labels})
            shown = ",".join(values[:5]) + (",..." if len(values) > 5 else "")
            present.append(f"{k} in {{{shown}}}" if values else f"no node has {k}")
        return (
            f"node selector {wanted} matches none of the {len(self.pool.nodes)} nodes "
            f"({'; '.join(present)})"
        )


def _artifact_order(a: Artifact) -> tuple[str, str, str, str, bool, float]:
    """A total order on artifacts, so duplicates resolve the same in any input order."""
    return (*a.identity(), a.fps is None, a.fps or 0.0)


def _kinds(pool: _Pool, idx: Iterable[int]) -> str:
    """'hailo8l x3, cpu x1' for a set of nodes, or 'no nodes'."""
    counts = Counter(pool.accel[i] for i in idx)
    if not counts:
        return "no nodes"
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))
