"""Prometheus metrics with Triton-style names, on their own HTTP port.

Per-model series are labelled `model` and `version`; the labelled children are created once per
model version and cached, so the request path only increments and observes. The NPU's
temperature and power are node-level and read from the backend at scrape time.
`METRIC_NAMES` lists every exported name (the Grafana dashboard test checks against it).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hatswarm_agent.backends import Selection
from hatswarm_agent.backends.base import DeviceInfo

METRIC_NAMES: list[str] = [
    "hatswarm_inference_request_success_total",
    "hatswarm_inference_request_failure_total",
    "hatswarm_inference_count_total",
    "hatswarm_inference_exec_count_total",
    "hatswarm_inference_request_duration_seconds",
    "hatswarm_inference_queue_duration_seconds",
    "hatswarm_inference_compute_duration_seconds",
    "hatswarm_model_queue_depth",
    "hatswarm_models_loaded",
    "hatswarm_model_compute_seconds_total",
    "hatswarm_model_energy_joules_total",
    "hatswarm_npu_temperature_celsius",
    "hatswarm_npu_power_watts",
    "hatswarm_route_requests_total",
    "hatswarm_route_retries_total",
    "hatswarm_route_hedges_total",
    "hatswarm_peer_ejections_total",
    "hatswarm_requests_shed_total",
    "hatswarm_cache_hits_total",
    "hatswarm_cache_misses_total",
    "hatswarm_cloud_fallback_requests_total",
    "hatswarm_cloud_fallback_cost_usd_total",
    "hatswarm_escalations_total",
    "hatswarm_route_affinity_total",
    "hatswarm_generation_prompt_tokens_total",
    "hatswarm_generation_completion_tokens_total",
    "hatswarm_generation_time_to_first_token_seconds",
    "hatswarm_generation_active_sequences",
    "hatswarm_generation_queued_sequences",
    "hatswarm_generation_sequence_slots",
    "hatswarm_generation_queued_prompt_tokens",
    "hatswarm_generation_kv_cache_tokens",
    "hatswarm_generation_kv_cache_budget_tokens",
    "hatswarm_generation_kv_cache_cached_tokens",
    "hatswarm_generation_prefix_hit_tokens_total",
    "hatswarm_generation_tokens_per_second",
    "hatswarm_generation_ttft_p50_seconds",
    "hatswarm_generation_ttft_p99_seconds",
    "hatswarm_tokens_total",
    "hatswarm_agent_backend_info",
]

_LABELS = ("model", "version")
_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


@dataclass
class ModelMetrics:
    """The labelled children of one model version: what the request path touches."""

    success: Counter
    inferences: Counter
    executions: Counter
    request_duration: Histogram
    queue_duration: Histogram
    compute_duration: Histogram
    compute_seconds: Counter
    energy_joules: Counter
    loaded: Gauge
    queue_depth: Gauge
    failures: Counter  # the parent family; children are made per reason on first failure
    prompt_tokens: Counter  # generative and embedding models
    generated_tokens: Counter
    first_token: Histogram
    sequences: Gauge
    name: str
    version: str

    def failure(self, reason: str) -> None:
        self.failures.labels(self.name, self.version, reason).inc()


class _DeviceCollector(Collector):
    """NPU temperature and power, read from the backend when Prometheus scrapes."""

    def __init__(self, read: Callable[[], DeviceInfo]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = self._read()
        labels = ["accelerator", "device"]
        values = [info.accelerator, info.device_id]
        temp = GaugeMetricFamily(
            "hatswarm_npu_temperature_celsius", "NPU temperature", labels=labels
        )
        power = GaugeMetricFamily("hatswarm_npu_power_watts", "NPU power draw", labels=labels)
        if info.temperature_c is not None:
            temp.add_metric(values, info.temperature_c)
        if info.watts is not None:
            power.add_metric(values, info.watts)
        yield temp
        yield power


class GenerationStatusLike(Protocol):
    """control_pb2.GenerationStatus's fields this module reads (no protobuf import here)."""

    queued_sequences: int
    max_sequences: int
    queued_prompt_tokens: int
    kv_cache_tokens_used: int
    kv_cache_tokens_budget: int
    kv_cache_tokens_cached: int
    prefix_hit_tokens: int
    tokens_per_second: float
    ttft_p50_ms: float
    ttft_p99_ms: float


# (name, help, field, scale): gauges of a generative model's GenerationStatus.
_GENERATION_GAUGES = (
    ("hatswarm_generation_queued_sequences", "Sequences waiting for a slot", "queued_sequences", 1.0),
    ("hatswarm_generation_sequence_slots", "Sequences that may run at once", "max_sequences", 1.0),
    ("hatswarm_generation_queued_prompt_tokens", "Prompt tokens of the waiting sequences",
     "queued_prompt_tokens", 1.0),
    ("hatswarm_generation_kv_cache_tokens", "KV cache tokens the running sequences hold",
     "kv_cache_tokens_used", 1.0),
    ("hatswarm_generation_kv_cache_budget_tokens", "KV cache budget (slots x context length)",
     "kv_cache_tokens_budget", 1.0),
    ("hatswarm_generation_kv_cache_cached_tokens",
     "KV cache tokens idle sequences keep for a later prompt's prefix", "kv_cache_tokens_cached",
     1.0),
    ("hatswarm_generation_tokens_per_second", "Generated tokens per second over the last 10 s",
     "tokens_per_second", 1.0),
    ("hatswarm_generation_ttft_p50_seconds", "Median time to first token over the last 60 s",
     "ttft_p50_ms", 1e-3),
    ("hatswarm_generation_ttft_p99_seconds", "p99 time to first token over the last 60 s",
     "ttft_p99_ms", 1e-3),
)  # fmt: skip


class _GenerationCollector(Collector):
    """Generative models' load in tokens, read from their status when Prometheus scrapes."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], Callable[[], GenerationStatusLike]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families = [
            GaugeMetricFamily(n, h, labels=list(_LABELS)) for n, h, _, _ in _GENERATION_GAUGES
        ]
        hits = CounterMetricFamily(
            "hatswarm_generation_prefix_hit_tokens",
            "Prompt tokens served from the prefix (KV) cache instead of prefilled",
            labels=list(_LABELS),
        )
        for (name, version), read in list(self.models.items()):
            status = read()
            for family, (_, _, attr, scale) in zip(families, _GENERATION_GAUGES, strict=True):
                family.add_metric([name, version], float(getattr(status, attr)) * scale)
            hits.add_metric([name, version], float(status.prefix_hit_tokens))
        yield from families
        yield hits


class _BackendCollector(Collector):
    """Which backend serves (`auto` resolves to hailo or onnxruntime) and on which chip: 1 per
    agent, `ready="false"` when the backend asked for cannot open here."""

    def __init__(
        self, select: Callable[[], Selection], device_info: Callable[[], DeviceInfo]
    ) -> None:
        self._select = select
        self._device_info = device_info

    def collect(self) -> Iterator[GaugeMetricFamily]:
        selection = self._select()
        info = self._device_info()
        family = GaugeMetricFamily(
            "hatswarm_agent_backend_info",
            "The backend serving on this agent (requested: what --backend asked for)",
            labels=["requested", "backend", "accelerator", "device", "ready"],
        )
        ready = "true" if selection.ready else "false"
        values = [selection.requested, selection.name, info.accelerator, info.device_id, ready]
        family.add_metric(values, 1.0)
        yield family


class AgentMetrics:
    """Every metric of one agent, in its own registry (several agents may share a process)."""

    def __init__(self, device_info: Callable[[], DeviceInfo] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._success = Counter(
            "hatswarm_inference_request_success",
            "Successful inference requests",
            _LABELS,
            registry=r,
        )
        self._failure = Counter(
            "hatswarm_inference_request_failure",
            "Failed inference requests by reason",
            (*_LABELS, "reason"),
            registry=r,
        )
        self._count = Counter(
            "hatswarm_inference_count", "Inferences performed (batch items)", _LABELS, registry=r
        )
        self._exec = Counter(
            "hatswarm_inference_exec_count", "Backend executions (batches)", _LABELS, registry=r
        )
        self._request = Histogram(
            "hatswarm_inference_request_duration_seconds",
            "End-to-end request time inside the agent",
            _LABELS,
            buckets=_BUCKETS,
            registry=r,
        )
        self._queue = Histogram(
            "hatswarm_inference_queue_duration_seconds",
            "Time a request waited in the model's queue",
            _LABELS,
            buckets=_BUCKETS,
            registry=r,
        )
        self._compute = Histogram(
            "hatswarm_inference_compute_duration_seconds",
            "Backend run time of the batch that carried the request",
            _LABELS,
            buckets=_BUCKETS,
            registry=r,
        )
        self._depth = Gauge(
            "hatswarm_model_queue_depth", "Requests waiting or running", _LABELS, registry=r
        )
        self._loaded = Gauge(
            "hatswarm_models_loaded", "1 when the model version is READY", _LABELS, registry=r
        )
        self._compute_s = Counter(
            "hatswarm_model_compute_seconds", "Accelerator seconds spent", _LABELS, registry=r
        )
        self._energy = Counter(
            "hatswarm_model_energy_joules", "Energy attributed to the model", _LABELS, registry=r
        )
        self._prompt_tokens = Counter(
            "hatswarm_generation_prompt_tokens",
            "Prompt (input) tokens of generations and embeddings",
            _LABELS,
            registry=r,
        )
        self._generated_tokens = Counter(
            "hatswarm_generation_completion_tokens", "Tokens generated", _LABELS, registry=r
        )
        self._first_token = Histogram(
            "hatswarm_generation_time_to_first_token_seconds",
            "Time from a generation's arrival to its first token",
            _LABELS,
            buckets=_BUCKETS,
            registry=r,
        )
        self._sequences = Gauge(
            "hatswarm_generation_active_sequences",
            "Sequences a generative model is generating now",
            _LABELS,
            registry=r,
        )
        self._generation = _GenerationCollector()
        r.register(self._generation)
        self.tokens = TokenCounts(r)
        self._memory = Gauge(
            "hatswarm_model_memory_bytes",
            "Resident memory each session of a model version added when it loaded",
            (*_LABELS, "session"),
            registry=r,
        )
        if device_info is not None:
            r.register(_DeviceCollector(device_info))

    def backend_info(
        self, select: Callable[[], Selection], device_info: Callable[[], DeviceInfo]
    ) -> None:
        """Export `hatswarm_agent_backend_info` (read at scrape time)."""
        self.registry.register(_BackendCollector(select, device_info))

    def model(self, name: str, version: str) -> ModelMetrics:
        """Labelled children for one model version (created on first use)."""
        labels = (name, version)
        return ModelMetrics(
            success=self._success.labels(*labels),
            inferences=self._count.labels(*labels),
            executions=self._exec.labels(*labels),
            request_duration=self._request.labels(*labels),
            queue_duration=self._queue.labels(*labels),
            compute_duration=self._compute.labels(*labels),
            compute_seconds=self._compute_s.labels(*labels),
            energy_joules=self._energy.labels(*labels),
            loaded=self._loaded.labels(*labels),
            queue_depth=self._depth.labels(*labels),
            failures=self._failure,
            prompt_tokens=self._prompt_tokens.labels(*labels),
            generated_tokens=self._generated_tokens.labels(*labels),
            first_token=self._first_token.labels(*labels),
            sequences=self._sequences.labels(*labels),
            name=name,
            version=version,
        )

    def generation_status(
        self, name: str, version: str, read: Callable[[], GenerationStatusLike]
    ) -> None:
        """Export a generative model's load in tokens, read at scrape time (until `forget`)."""
        self._generation.models[(name, version)] = read

    def failure_without_model(self, reason: str) -> None:
        """A request for a model this agent does not have (no per-name series: bounded)."""
        self._failure.labels(model="", version="", reason=reason).inc()

    def memory(self, name: str, version: str, sessions: dict[str, int]) -> None:
        """What each of a model version's sessions costs in resident memory, read from
        `sessions` at every scrape (a session the backend lets go reads 0)."""
        for session in list(sessions):
            self._memory.labels(name, version, session).set_function(
                functools.partial(_size_of, sessions, session)
            )

    def forget(self, name: str, version: str) -> None:
        """Drop a model version's gauges after unload (counters keep their history)."""
        for gauge in (self._depth, self._loaded, self._sequences):
            with contextlib.suppress(KeyError):
                gauge.remove(name, version)
        self._generation.models.pop((name, version), None)
        for labels in list(self._memory._metrics):  # every session of this version
            if labels[:2] == (name, version):
                with contextlib.suppress(KeyError):
                    self._memory.remove(*labels)

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics on its own port, in a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)


EDGE = "edge"
CLOUD = "cloud"


class TokenCounts:
    """Tokens by model, kind (prompt / completion) and where they were processed (edge: on
    this node; cloud: sent to the cloud fallback by this node): `hatswarm_tokens_total` and
    the same totals for NodeStatus, which the operator prices (FinOps per token). A generation
    forwarded to a peer is counted by the peer that ran it, so a pool's sum counts it once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counter = Counter(
            "hatswarm_tokens",
            "Tokens processed, by model, kind (prompt, completion) and where (edge, cloud)",
            ("model", "kind", "where"),
            registry=registry,
        )
        self.totals: dict[tuple[str, str, str], int] = {}

    def add(self, model: str, where: str, prompt: int, completion: int) -> None:
        for kind, n in (("prompt", prompt), ("completion", completion)):
            if n > 0:
                key = (model, kind, where)
                self.totals[key] = self.totals.get(key, 0) + n
                self._counter.labels(*key).inc(n)


def _size_of(sessions: dict[str, int], session: str) -> float:
    return float(sessions.get(session, 0))


class RouteMetrics:
    """The dispatcher's counters: where requests went, retries, ejections, shedding, cache, cloud."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "hatswarm_route_requests",
            "Requests by where they were answered (local, peer, cloud, cache)",
            ("model", "route"),
            registry=r,
        )
        self.retries = Counter(
            "hatswarm_route_retries", "Requests sent again to another replica", registry=r
        )
        self.hedges = Counter(
            "hatswarm_route_hedges", "Second copies sent for slow requests", registry=r
        )
        self.ejections = Counter(
            "hatswarm_peer_ejections", "Peers ejected after consecutive failures", ("peer",),
            registry=r,
        )  # fmt: skip
        self.attempt_timeouts = Counter(
            "hatswarm_peer_attempt_timeouts",
            "Forwarded attempts that outlived their per-attempt timeout (another replica asked)",
            ("peer",),
            registry=r,
        )
        self.shed = Counter(
            "hatswarm_requests_shed",
            "Requests refused because the pool was saturated",
            ("model", "priority"),
            registry=r,
        )
        self.cache_hits = Counter(
            "hatswarm_cache_hits", "Responses answered from the cache", ("model",), registry=r
        )
        self.cache_misses = Counter(
            "hatswarm_cache_misses", "Cacheable requests not in the cache", ("model",), registry=r
        )
        self.cloud_requests = Counter(
            "hatswarm_cloud_fallback_requests",
            "Requests sent to the cloud fallback",
            ("model",),
            registry=r,
        )
        self.cloud_cost = Counter(
            "hatswarm_cloud_fallback_cost_usd",
            "Cost of the cloud fallback requests (price_per_1k_usd / 1000 each)",
            ("model",),
            registry=r,
        )
        self.escalations = Counter(
            "hatswarm_escalations",
            "Low-confidence answers sent on to a bigger tier (target: a model name or cloud)",
            ("model", "target"),
            registry=r,
        )
        self.affinities = Counter(
            "hatswarm_route_affinity",
            "Generations with a session or prefix affinity, by whether they ran on its node "
            "(hit) or elsewhere because it was full or failed (miss)",
            ("model", "outcome"),
            registry=r,
        )
        self._routed: dict[tuple[str, str], Counter] = {}

    def routed(self, model: str, route: str) -> Counter:
        """The `requests` child for (model, route), looked up once: labels() costs ~1.5 us."""
        child = self._routed.get((model, route))
        if child is None:
            child = self._routed[(model, route)] = self.requests.labels(model, route)
        return child

    def affinity(self, model: str, hit: bool) -> Counter:
        """The `affinities` child for a generation that had an affine node."""
        return self.affinities.labels(model, "hit" if hit else "miss")
