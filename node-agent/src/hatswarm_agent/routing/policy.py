"""Routing policy: where one request should run. Pure: plain data in, a decision out, no I/O.

What the dispatcher knows of each peer is only what it saw itself (requests outstanding from
this agent, an EWMA of their latency, consecutive failures) plus the queue depth the peer
reported in its last answer. Picking among the replicas of a model version is power-of-two-choices: two
replicas drawn by table weight, the one with the lower expected wait wins; least-loaded and
round-robin are there for comparison (RoutingTable.policy). A request that names no version is
split across the model's versions by version weight (canary). A request naming a LoRA adapter
is first scored per replica the way the Gateway API Inference Extension does (adapter loaded
1.0 > free slot 0.8 > must evict 0.6 > cannot 0), and the policy picks among the best-scored
ones; what each endpoint has loaded comes from the table and from this agent's own forwards.
A generation is scored differently, by load in tokens (sequences over slots, KV cache use, as
the peer last reported them) plus session / prefix affinity (`affinity_key`, `rendezvous`,
`generation_score`); the table's policy does not apply to it.
The I/O around these decisions lives beside it: attempts.py (retries, waiting),
forwarding.py (calls, hedging), peers.py (channels, probes).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hatswarm_agent.protocol.v1 import control_pb2

POLICIES = ("PowerOfTwoChoices", "LeastLoaded", "RoundRobin")
ADAPTER_POLICIES = ("Affinity", "Ignore")
# Adapter scores (Gateway API Inference Extension's LoRA affinity): higher is better.
ADAPTER_LOADED = 1.0
ADAPTER_FREE_SLOT = 0.8
ADAPTER_EVICT = 0.6
ADAPTER_CANNOT = 0.0
EWMA_ALPHA = 0.2
# A reported queue depth is trusted this long; then only what this agent sees counts.
DEPTH_FRESH_S = 0.5
# A peer that answered RESOURCE_EXHAUSTED counts as full this long (it is busy, not broken).
EXHAUSTED_HOLD_S = 0.02
# Generation scoring, as the Gateway API Inference Extension's scorers (higher is better):
# prefix / session affinity, then free sequence slots (queue), then free KV cache.
AFFINITY_WEIGHT = 2.0
QUEUE_WEIGHT = 1.0
KV_CACHE_WEIGHT = 1.0
# A generation's load report is trusted this long (answers are rarer than for ModelInfer).
GENERATION_FRESH_S = 2.0
# Completion prompts shorter than this have no prefix affinity (little to reuse); longer ones
# are keyed by this many leading characters.
PREFIX_AFFINITY_CHARS = 64
EJECT_AFTER_FAILURES = 3
EJECT_BASE_S = 0.5
EJECT_MAX_S = 10.0
# Per-attempt deadlines (attempt_timeout): what a peer gets before a second replica is asked.
ATTEMPT_FACTOR = 4.0
ATTEMPT_MIN_S = 0.25
ATTEMPT_COLD_S = 1.0  # nothing is known yet of the peer or the pool
TAIL_PERCENTILE = 99.0  # the pool's tail latency an attempt timeout is never under


@dataclass
class PeerState:
    """What this agent knows of one peer: its own observations, never a global view."""

    address: str
    node: str = ""
    outstanding: int = 0
    ewma_s: float = 0.0
    samples: int = 0
    consecutive_failures: int = 0
    ejections: int = 0  # in a row: sets the back-off
    ejected_until: float = 0.0
    ejected: bool = False
    reported_depth: int = -1
    reported_at: float = 0.0
    exhausted_until: float = 0.0
    # A generation's answers also report the peer's sequence slots and KV cache use (0..1).
    reported_slots: int = 0
    reported_kv_use: float = -1.0
    generation_reported_at: float = 0.0

    def expected_wait(self, now: float) -> float:
        """The P2C cost: queued work ahead of us times the time per request."""
        per_request = self.ewma_s if self.samples else 0.001
        depth = self.outstanding
        if self.reported_depth >= 0 and now - self.reported_at < DEPTH_FRESH_S:
            depth = max(depth, self.reported_depth)
        return (depth + 1) * per_request * (1 + self.consecutive_failures)

    def full(self, limit: int, now: float) -> bool:
        if now < self.exhausted_until:
            return True
        if limit <= 0:
            return False
        if self.outstanding >= limit:
            return True
        fresh = self.reported_depth >= 0 and now - self.reported_at < DEPTH_FRESH_S
        return fresh and self.reported_depth >= limit

    def available(self, now: float) -> bool:
        return not self.ejected

    # -- outcomes -------------------------------------------------------------------------

    def on_success(self, seconds: float, depth: int, now: float) -> None:
        """An answer: the peer is healthy (an ejected one tried in panic is readmitted)."""
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejected = False
        if self.samples:
            self.ewma_s += EWMA_ALPHA * (seconds - self.ewma_s)
        else:
            self.ewma_s = seconds
        self.samples += 1
        if depth >= 0:
            self.reported_depth, self.reported_at = depth, now

    def on_generation_load(self, depth: int, slots: int, kv_use: float, now: float) -> None:
        """What a peer's generation answer said of its load (sequences, slots, KV use)."""
        if depth >= 0:
            self.reported_depth, self.reported_at = depth, now
        if slots > 0:
            self.reported_slots, self.reported_kv_use = slots, kv_use
            self.generation_reported_at = now

    def token_load(self, now: float) -> tuple[float, float]:
        """(sequences over slots, KV cache use), each 0..1, from the last fresh report and the
        sequences this agent has running there; unknown slots count every sequence as
        half the room left."""
        sequences = float(self.outstanding)
        fresh = now - self.generation_reported_at < GENERATION_FRESH_S
        if fresh and self.reported_depth >= 0:
            sequences = max(sequences, self.reported_depth)
        if fresh and self.reported_slots > 0:
            queue = min(1.0, sequences / self.reported_slots)
            kv = min(1.0, max(0.0, self.reported_kv_use))
            return queue, kv
        queue = sequences / (sequences + 1.0)
        return queue, queue

    def on_exhausted(self, now: float) -> None:
        self.exhausted_until = now + EXHAUSTED_HOLD_S

    def on_failure(self, now: float) -> bool:
        """Count a failure; True when this one ejects the peer."""
        self.consecutive_failures += 1
        if self.ejected or self.consecutive_failures < EJECT_AFTER_FAILURES:
            return False
        self.ejected = True
        self.ejected_until = now + min(EJECT_MAX_S, EJECT_BASE_S * 2**self.ejections)
        self.ejections += 1
        return True

    def on_probe(self, healthy: bool, now: float) -> None:
        """The background health probe's answer for an ejected peer."""
        if healthy:
            self.ejected = False
            self.consecutive_failures = 0
        else:
            self.ejected_until = now + min(EJECT_MAX_S, EJECT_BASE_S * 2**self.ejections)
            self.ejections += 1


@dataclass
class AdapterResidency:
    """One endpoint's adapters for one route: what the table said, then what we saw since.

    `known` None means the endpoint did not report its adapters (it may have any); `slots` 0
    means its slot count is unknown (then nothing is learned, the table's word stands).
    """

    resident: list[str] = field(default_factory=list)  # least recently used first
    known: frozenset[str] | None = None
    slots: int = 0

    @classmethod
    def from_endpoint(cls, ep: control_pb2.Endpoint) -> AdapterResidency:
        resident = list(ep.adapters)
        known = frozenset(ep.adapters_known) | frozenset(resident) if ep.adapters_known else None
        slots = len(resident) + ep.adapter_slots_free if (resident or ep.adapter_slots_free) else 0
        return cls(resident, known, slots)

    def score(self, adapter: str) -> float:
        return adapter_score(
            adapter in self.resident,
            self.known is None or adapter in self.known,
            self.slots - len(self.resident) if self.slots else 0,
        )

    def used(self, adapter: str) -> None:
        """A request with `adapter` was served there: it is resident now (LRU order)."""
        if not self.slots or (self.known is not None and adapter not in self.known):
            return
        if adapter in self.resident:
            self.resident.remove(adapter)
        self.resident.append(adapter)
        del self.resident[: max(0, len(self.resident) - self.slots)]


def adapter_score(resident: bool, known: bool, slots_free: int) -> float:
    """Loaded 1.0 > free slot 0.8 > must evict 0.6 > cannot (unknown adapter) 0."""
    if resident:
        return ADAPTER_LOADED
    if not known:
        return ADAPTER_CANNOT
    return ADAPTER_FREE_SLOT if slots_free > 0 else ADAPTER_EVICT


@dataclass(frozen=True)
class Replica:
    """One endpoint of a route: a peer, its table weight and its adapters for the route."""

    peer: PeerState
    weight: float
    adapters: AdapterResidency = field(default_factory=AdapterResidency)

    def adapter_score(self, adapter: str) -> float:
        return self.adapters.score(adapter) if adapter else ADAPTER_LOADED


@dataclass
class VersionRoute:
    """The replicas of one model version (version "" = whatever version the peer serves)."""

    model: str
    version: str
    replicas: list[Replica]
    weight: float
    cache_ttl_s: float = 0.0
    cloud_fallback: bool = False
    local: bool = False  # this agent is one of the endpoints
    escalation: Escalation | None = None
    cloud_generation: CloudGenerationRules | None = None

    def replica(self, address: str) -> Replica | None:
        return next((r for r in self.replicas if r.peer.address == address), None)


@dataclass(frozen=True)
class CloudGenerationRules:
    """A generative route's way to the cloud: the cloud's model name, and which generations
    escalate (a prompt over the edge model's context; a mean log-probability of the first
    `logprob_tokens` tokens under `min_mean_logprob`; 0 tokens: no such rule)."""

    cloud_model: str = ""
    long_prompts: bool = False
    min_mean_logprob: float = 0.0
    logprob_tokens: int = 0

    @classmethod
    def from_route(cls, route: control_pb2.Route) -> CloudGenerationRules | None:
        rules = cls(
            route.cloud_model,
            route.escalate_long_prompts,
            route.escalation_min_mean_logprob,
            max(0, route.escalation_logprob_tokens),
        )
        return rules if rules != cls() else None


@dataclass(frozen=True)
class Escalation:
    """A route's confidence cascade: under `threshold` on `output`, ask the bigger tier."""

    output: str
    threshold: float
    model: str = ""  # a bigger model in the pool, or
    cloud: bool = False  # the cloud fallback

    @property
    def target(self) -> str:
        return "cloud" if self.cloud else f"model:{self.model}"

    @classmethod
    def from_route(cls, route: control_pb2.Route) -> Escalation | None:
        if not route.escalation_output or not (route.escalation_model or route.escalation_cloud):
            return None
        return cls(
            route.escalation_output,
            route.escalation_threshold,
            "" if route.escalation_cloud else route.escalation_model,
            route.escalation_cloud,
        )


@dataclass
class CompiledTable:
    """A RoutingTable turned into lookups: model -> versions, with the peers shared by address."""

    table: control_pb2.RoutingTable
    models: dict[str, dict[str, VersionRoute]] = field(default_factory=dict)
    peers: dict[str, PeerState] = field(default_factory=dict)

    @property
    def policy(self) -> str:
        return self.table.policy or "PowerOfTwoChoices"

    @property
    def adapter_policy(self) -> str:
        return self.table.adapter_policy or "Affinity"

    def routes(self, model: str) -> dict[str, VersionRoute]:
        return self.models.get(model, {})


def compile_table(
    table: control_pb2.RoutingTable,
    self_node: str,
    self_addresses: Iterable[str],
    known: dict[str, PeerState] | None = None,
) -> CompiledTable:
    """Index `table`; endpoints naming this agent mark the route local instead of a peer.

    Peer state carries over from `known` (same address), so a new table keeps what the
    dispatcher learned about latency and failures.
    """
    mine = set(self_addresses)
    known = known or {}
    out = CompiledTable(table)
    for route in table.routes:
        replicas: list[Replica] = []
        local = False
        for ep in route.endpoints:
            if (self_node and ep.node == self_node) or ep.address in mine:
                local = True
                continue
            if not ep.address:
                continue
            peer = out.peers.get(ep.address) or known.get(ep.address) or PeerState(ep.address)
            peer.node = ep.node or ep.address
            out.peers[ep.address] = peer
            replicas.append(
                Replica(
                    peer, ep.weight if ep.weight > 0 else 1.0, AdapterResidency.from_endpoint(ep)
                )
            )
        weight = route.weight if route.weight > 0 else sum(r.weight for r in replicas) or 1.0
        out.models.setdefault(route.model, {})[route.version] = VersionRoute(
            route.model,
            route.version,
            replicas,
            weight,
            float(route.cache_ttl_seconds),
            route.cloud_fallback,
            local,
            Escalation.from_route(route),
            cloud_generation=CloudGenerationRules.from_route(route),
        )
    return out


def pick_version(
    routes: dict[str, VersionRoute], rng: random.Random, asked: str = ""
) -> VersionRoute | None:
    """The route for the asked version; with none asked, a weighted draw (canary split)."""
    if asked:
        return routes.get(asked) or routes.get("")
    if not routes:
        return None
    if len(routes) == 1:
        return next(iter(routes.values()))
    choices = list(routes.values())
    cumulative = list(itertools.accumulate(r.weight for r in choices))
    x = rng.random() * cumulative[-1]
    return choices[min(bisect.bisect_right(cumulative, x), len(choices) - 1)]


def _weighted_pair(replicas: Sequence[Replica], rng: random.Random) -> tuple[Replica, Replica]:
    """Two distinct replicas drawn by weight, without replacement."""
    total = sum(r.weight for r in replicas)
    x = rng.random() * total
    first = len(replicas) - 1
    for i, r in enumerate(replicas):
        x -= r.weight
        if x < 0:
            first = i
            break
    rest_total = total - replicas[first].weight
    x = rng.random() * rest_total
    second = first
    for i, r in enumerate(replicas):
        if i == first:
            continue
        second = i
        x -= r.weight
        if x < 0:
            break
    return replicas[first], replicas[second]


class Balancer:
    """Chooses a replica under one of POLICIES; keeps the round-robin cursor."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self._cursor = itertools.count()

    def choose(
        self,
        replicas: Sequence[Replica],
        now: float,
        limit: int,
        policy: str = "PowerOfTwoChoices",
        exclude: frozenset[str] | set[str] = frozenset(),
        adapter: str = "",
    ) -> tuple[PeerState | None, bool]:
        """(the peer to try, whether any usable replica was merely full).

        Excluded replicas are never chosen, ejected ones only when every replica left is
        ejected (panic, as Envoy does: the alternative is failing a request some of them
        may answer); full ones only count as saturated. With `adapter`, replicas that cannot
        serve it are left out and the policy picks among the open ones with the best adapter
        score.
        """
        candidates = [r for r in replicas if r.peer.address not in exclude]
        usable = [r for r in candidates if not r.peer.ejected] or candidates
        if adapter:
            usable = [r for r in usable if r.adapter_score(adapter) > ADAPTER_CANNOT]
        open_ = [r for r in usable if not r.peer.full(limit, now)]
        if adapter and len(open_) > 1:
            best = max(r.adapter_score(adapter) for r in open_)
            open_ = [r for r in open_ if r.adapter_score(adapter) == best]
        saturated = bool(usable) and not open_
        if not open_:
            return None, saturated
        if len(open_) == 1:
            return open_[0].peer, False
        if policy == "RoundRobin":
            return self._round_robin(open_), False
        if policy == "LeastLoaded":
            return min(open_, key=lambda r: r.peer.expected_wait(now) / r.weight).peer, False
        a, b = _weighted_pair(open_, self.rng)
        wa = a.peer.expected_wait(now) / a.weight
        wb = b.peer.expected_wait(now) / b.weight
        return (a.peer if wa <= wb else b.peer), False

    @staticmethod
    def best_adapter_score(
        replicas: Sequence[Replica],
        now: float,
        limit: int,
        adapter: str,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> float:
        """The best adapter score among the replicas that could take a request now."""
        return max(
            (
                r.adapter_score(adapter)
                for r in replicas
                if not r.peer.ejected
                and r.peer.address not in exclude
                and not r.peer.full(limit, now)
            ),
            default=ADAPTER_CANNOT,
        )

    def choose_generation(
        self,
        replicas: Sequence[Replica],
        now: float,
        limit: int,
        exclude: frozenset[str] | set[str] = frozenset(),
        affine: str = "",
    ) -> tuple[PeerState | None, bool]:
        """(the peer to try for a generation, whether any usable replica was merely full).

        Open replicas are scored by `generation_score` (the node named `affine` gets the
        affinity weight); the best wins, ties drawn at random.
        """
        usable = [r for r in replicas if not r.peer.ejected and r.peer.address not in exclude]
        open_ = [r for r in usable if not r.peer.full(limit, now)]
        if not open_:
            return None, bool(usable)
        scored = [(generation_score(r.peer, now, r.peer.node == affine), r) for r in open_]
        best = max(score for score, _ in scored)
        top = [r for score, r in scored if score >= best - 1e-9]
        return (top[0] if len(top) == 1 else self.rng.choice(top)).peer, False

    def _round_robin(self, replicas: Sequence[Replica]) -> PeerState:
        """Smooth weighted round robin over a fixed sequence of weighted slots."""
        slots = [r for r in replicas for _ in range(max(1, round(r.weight)))]
        return slots[next(self._cursor) % len(slots)].peer


def attempt_timeout(
    peer: PeerState,
    pool_tail_s: float | None,
    factor: float = ATTEMPT_FACTOR,
    floor_s: float = ATTEMPT_MIN_S,
    cold_s: float = ATTEMPT_COLD_S,
) -> float:
    """How long one attempt on `peer` may take before another replica is asked (hedged).

    `factor` times what the peer should take: its recent latency as this agent saw it (queueing
    included), or the pool's recent tail latency when that is longer (an average hides the
    tail), never under `floor_s`; with nothing measured yet, `cold_s`. The caller bounds it by
    the request's budget. A frozen peer then costs a request one attempt timeout, not its
    budget.
    """
    expected: float | None = peer.ewma_s if peer.samples else None
    if pool_tail_s is not None:
        expected = max(expected or 0.0, pool_tail_s)
    if expected is None:
        return max(floor_s, cold_s)
    return max(floor_s, factor * expected)


def generation_score(peer: PeerState, now: float, affine: bool) -> float:
    """A peer's fitness for a new generation: affinity, free sequence slots, free KV cache."""
    queue, kv = peer.token_load(now)
    return AFFINITY_WEIGHT * affine + QUEUE_WEIGHT * (1.0 - queue) + KV_CACHE_WEIGHT * (1.0 - kv)


def affinity_key(prompt: str | Sequence[Mapping[str, str]], session: str = "") -> str:
    """What ties a generation to the node that holds its KV cache ("" for nothing):

    - an explicit session id (the `X-Session-Id` header, OpenAI's `user`, the
      `hatswarm.session` parameter of ModelStreamInfer);
    - for chat messages, the system messages and the first user message: every turn of a
      conversation starts with them;
    - for a completion prompt of PREFIX_AFFINITY_CHARS or more, its first that many characters
      (a follow-up prompt that extends it starts the same).
    """
    if session:
        return f"session:{session}"
    if isinstance(prompt, str):
        if len(prompt) < PREFIX_AFFINITY_CHARS:
            return ""
        return "prefix:" + prompt[:PREFIX_AFFINITY_CHARS]
    head: list[str] = []
    for message in prompt:
        head.append(f"{message.get('role', '')}\0{message.get('content', '')}")
        if message.get("role") == "user":
            return "chat:" + "\1".join(head)
    return ""


def rendezvous(key: str, nodes: Iterable[str]) -> str:
    """The node `key` belongs to, by highest-random-weight hashing: every agent computes the
    same node from the same replicas without sharing state, and when a node leaves only its
    own keys move. "" when there are no nodes."""
    best, best_weight = "", b""
    for node in nodes:
        weight = hashlib.blake2b(f"{key}\0{node}".encode(), digest_size=8).digest()
        if weight > best_weight:
            best, best_weight = node, weight
    return best


class LatencyWindow:
    """Recent forwarding latencies, for the hedging threshold (a percentile)."""

    def __init__(self, size: int = 512, min_samples: int = 20) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.min_samples = min_samples

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def percentile(self, p: float) -> float | None:
        if len(self._values) < self.min_samples:
            return None
        ordered = sorted(self._values)
        k = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[k]


@dataclass(order=True)
class _Waiter:
    key: tuple[int, int]
    token: object = field(compare=False)


class WaitingLine:
    """High-priority requests waiting for capacity, most important (then oldest) first.

    Pure bookkeeping: `join` returns a ticket, `next` pops the one to wake; attempts.Capacity pairs
    the tickets with futures.
    """

    def __init__(self) -> None:
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def join(self, priority: int, token: object) -> None:
        heapq.heappush(self._heap, _Waiter((-priority, next(self._seq)), token))

    def next(self) -> object | None:
        return heapq.heappop(self._heap).token if self._heap else None

    def remove(self, token: object) -> None:
        for i, w in enumerate(self._heap):
            if w.token is token:
                self._heap.pop(i)
                heapq.heapify(self._heap)
                return


def should_shed(priority: int, threshold: int = 1) -> bool:
    """In a saturated pool, requests below `threshold` are refused first; the rest wait."""
    return priority < threshold


RETRYABLE_CODES = frozenset(
    {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "NOT_FOUND", "CANCELLED", "UNKNOWN"}
)
"""Status codes (by name) after which another replica may still answer.

NOT_FOUND covers a stale table (the peer unloaded the model); CANCELLED and UNKNOWN what a
peer dying mid-call can look like. Inference is idempotent, so a retry is always safe.
"""
