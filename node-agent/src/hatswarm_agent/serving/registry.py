"""The registry of model versions this agent knows: ready, loading or failed.

Lookups on the request path are two dict reads. Versions without a number sort after numbered
ones; an empty version means the newest READY one, as in Triton.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hatswarm_agent.backends.base import LoadedModel, TensorSpec
from hatswarm_agent.backends.generation import GenerationLoad, GenerativeModel
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.serving.adapters import AdapterSet
from hatswarm_agent.serving.batching import ModelQueue
from hatswarm_agent.serving.errors import (
    ModelNotFoundError,
    ModelNotReadyError,
    UnknownAdapterError,
)
from hatswarm_agent.serving.metrics import ModelMetrics

DEFAULT_VERSION = "1"
_RATE_WINDOW_S = 10.0
_TTFT_WINDOW_S = 60.0


def version_key(version: str) -> tuple[int, int, str]:
    """Numeric versions in numeric order, then the rest lexically."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


@dataclass
class ModelStats:
    """Rolling request statistics for NodeStatus (Prometheus has the full histograms)."""

    success: int = 0
    failure: int = 0
    inferences: int = 0
    executions: int = 0
    compute_seconds: float = 0.0
    energy_joules: float = 0.0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=2048))
    completions: deque[float] = field(default_factory=lambda: deque(maxlen=65536))

    def record_success(self, seconds: float) -> None:
        self.success += 1
        self.latencies_s.append(seconds)
        self.completions.append(time.monotonic())

    def request_rate(self) -> float:
        """Completed requests per second over the last window."""
        horizon = time.monotonic() - _RATE_WINDOW_S
        recent = 0
        for t in reversed(self.completions):
            if t < horizon:
                break
            recent += 1
        return recent / _RATE_WINDOW_S

    def quantiles_ms(self) -> tuple[float, float, float]:
        if not self.latencies_s:
            return (0.0, 0.0, 0.0)
        p = np.percentile(np.fromiter(self.latencies_s, float), [50, 95, 99]) * 1000
        return (float(p[0]), float(p[1]), float(p[2]))


@dataclass
class GenerationStats:
    """Tokens and time to first token of a generative model, for NodeStatus (Prometheus has
    the counters and the TTFT histogram): rates over the last 10 s, TTFT over the last 60 s."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_tokens: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=2048))
    generated: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=65536))

    def first_token(self, seconds: float) -> None:
        self.first_tokens.append((time.monotonic(), seconds))

    def tokens(self, count: int) -> None:
        """`count` tokens generated now."""
        if count:
            self.completion_tokens += count
            self.generated.append((time.monotonic(), count))

    def tokens_per_second(self) -> float:
        horizon = time.monotonic() - _RATE_WINDOW_S
        recent = 0
        for t, n in reversed(self.generated):
            if t < horizon:
                break
            recent += n
        return recent / _RATE_WINDOW_S

    def ttft_ms(self) -> tuple[float, float]:
        """(p50, p99) of the recent times to first token, (0, 0) when there are none."""
        horizon = time.monotonic() - _TTFT_WINDOW_S
        recent = [s for t, s in self.first_tokens if t >= horizon]
        if not recent:
            return (0.0, 0.0)
        p = np.percentile(np.asarray(recent), [50, 99]) * 1000
        return (float(p[0]), float(p[1]))

    def status(self, load: GenerationLoad) -> control_pb2.GenerationStatus:
        p50, p99 = self.ttft_ms()
        return control_pb2.GenerationStatus(
            active_sequences=load.active_sequences,
            queued_sequences=load.queued_sequences,
            max_sequences=load.max_sequences,
            queued_prompt_tokens=load.queued_prompt_tokens,
            kv_cache_tokens_used=load.context_tokens_in_use,
            kv_cache_tokens_budget=load.context_tokens_capacity,
            kv_cache_tokens_cached=load.cached_prefix_tokens,
            tokens_per_second=self.tokens_per_second(),
            ttft_p50_ms=p50,
            ttft_p99_ms=p99,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            prefix_hit_tokens=load.prefix_hit_tokens,
        )


def node_generation(models: Sequence[control_pb2.ModelStatus]) -> control_pb2.GenerationStatus:
    """A node's generative models together: sums, and the worst model's TTFT."""
    out = control_pb2.GenerationStatus()
    for m in models:
        if not m.HasField("generation"):
            continue
        s = m.generation
        out.active_sequences += s.active_sequences
        out.queued_sequences += s.queued_sequences
        out.max_sequences += s.max_sequences
        out.queued_prompt_tokens += s.queued_prompt_tokens
        out.kv_cache_tokens_used += s.kv_cache_tokens_used
        out.kv_cache_tokens_budget += s.kv_cache_tokens_budget
        out.kv_cache_tokens_cached += s.kv_cache_tokens_cached
        out.tokens_per_second += s.tokens_per_second
        out.ttft_p50_ms = max(out.ttft_p50_ms, s.ttft_p50_ms)
        out.ttft_p99_ms = max(out.ttft_p99_ms, s.ttft_p99_ms)
        out.prompt_tokens += s.prompt_tokens
        out.completion_tokens += s.completion_tokens
        out.prefix_hit_tokens += s.prefix_hit_tokens
    return out


@dataclass
class ModelVersion:
    """One model version and everything serving it needs."""

    name: str
    version: str
    request: control_pb2.LoadModelRequest  # what was asked for (kept for the assignment)
    backend: str
    state: int = control_pb2.MODEL_STATE_LOADING
    reason: str = ""
    sha256: str = ""
    model: LoadedModel | None = None
    queue: ModelQueue | None = None
    metrics: ModelMetrics | None = None
    stats: ModelStats = field(default_factory=ModelStats)
    generation: GenerationStats = field(default_factory=GenerationStats)
    loaded_at_unix_ms: int = 0
    persistent: bool = True  # part of the saved assignment (CLI models are not)
    active_watts: float | None = None
    adapters: AdapterSet | None = None  # LoRA adapters requests may name (adapters.py)
    # Adapters asked for but refused (fetch, verification or fit), name -> why; the base serves.
    adapter_refusals: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state == control_pb2.MODEL_STATE_READY

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self.model.inputs if self.model else ()

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self.model.outputs if self.model else ()

    def check_adapter(self, adapter: str) -> AdapterSet:
        """The adapter set that knows `adapter`; NOT_FOUND naming both when it does not."""
        adapters = self.adapters
        if adapters is None:
            raise UnknownAdapterError(adapter, self.name, self.version)
        adapters.check(adapter)
        return adapters

    def on_execution(self, items: int, seconds: float) -> None:
        """Batch accounting (event loop): executions, inferences, compute time, energy."""
        stats = self.stats
        stats.executions += 1
        stats.inferences += items
        stats.compute_seconds += seconds
        joules = seconds * self.active_watts if self.active_watts else 0.0
        stats.energy_joules += joules
        if self.metrics is not None:
            m = self.metrics
            m.executions.inc()
            m.inferences.inc(items)
            m.compute_seconds.inc(seconds)
            if joules:
                m.energy_joules.inc(joules)

    def status(self) -> control_pb2.ModelStatus:
        s = self.stats
        reason = self.reason
        if self.ready and self.adapter_refusals:
            reason = "; ".join(
                f"adapter '{n}' refused: {r}" for n, r in self.adapter_refusals.items()
            )
        p50, p95, p99 = s.quantiles_ms()
        a = self.adapters
        depth = self.queue.depth if self.queue else 0
        limit = self.queue.limit if self.queue else 0
        generation = None
        if isinstance(self.model, GenerativeModel):  # load in sequences, not queued requests
            load = self.model.load()
            depth = load.active_sequences + load.queued_sequences
            limit = load.max_sequences
            generation = self.generation.status(load)
        return control_pb2.ModelStatus(
            name=self.name,
            version=self.version,
            state=self.state,  # type: ignore[arg-type]
            reason=reason,
            backend=self.backend,
            sha256=self.sha256,
            queue_depth=depth,
            queue_limit=limit,
            request_rate=s.request_rate(),
            latency=control_pb2.LatencyQuantiles(p50_ms=p50, p95_ms=p95, p99_ms=p99),
            request_success=s.success,
            request_failure=s.failure,
            inference_count=s.inferences,
            execution_count=s.executions,
            compute_seconds=s.compute_seconds,
            energy_joules=s.energy_joules,
            capacity_fps=self.model.capacity_fps() if self.model else 0.0,
            adapters=a.names() if a else [],
            loaded_at_unix_ms=self.loaded_at_unix_ms,
            resident_adapters=a.resident() if a else [],
            adapter_slots=a.slots if a else 0,
            adapter_requests=dict(a.requests) if a else {},
            adapter_loads=a.loads if a else 0,
            adapter_evictions=a.evictions if a else 0,
            generation=generation,
        )


class ModelRegistry:
    """name -> version -> ModelVersion."""

    def __init__(self) -> None:
        self._models: dict[str, dict[str, ModelVersion]] = {}

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The version to serve; NOT_FOUND when unknown, UNAVAILABLE when not READY."""
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFoundError(f"unknown model '{name}'")
        if version:
            entry = versions.get(version)
            if entry is None:
                raise ModelNotFoundError(
                    f"unknown version '{version}' of model '{name}': have {sorted(versions)}"
                )
            if not entry.ready:
                state = control_pb2.ModelState.Name(entry.state)  # type: ignore[arg-type]
                raise ModelNotReadyError(
                    f"model '{name}' version '{version}' is {state}: {entry.reason}".rstrip(": ")
                )
            return entry
        if len(versions) == 1:  # the usual case: one version, no sorting
            (entry,) = versions.values()
            if entry.ready:
                return entry
        ready = [v for v in versions.values() if v.ready]
        if not ready:
            reasons = "; ".join(f"{v.version}: {v.reason}" for v in versions.values() if v.reason)
            raise ModelNotReadyError(f"model '{name}' has no READY version ({reasons})")
        return max(ready, key=lambda v: version_key(v.version))

    def find(self, name: str, version: str) -> ModelVersion | None:
        return self._models.get(name, {}).get(version)

    def put(self, entry: ModelVersion) -> None:
        self._models.setdefault(entry.name, {})[entry.version] = entry

    def remove(self, name: str, version: str = "") -> list[ModelVersion]:
        """Take one version (all when empty) out of the registry."""
        versions = self._models.get(name, {})
        if version:
            removed = [versions.pop(version)] if version in versions else []
        else:
            removed = list(versions.values())
            versions.clear()
        if not versions:
            self._models.pop(name, None)
        return removed

    def ready_versions(self, name: str) -> list[str]:
        versions = self._models.get(name, {})
        return sorted((v for v, e in versions.items() if e.ready), key=version_key)

    def all(self) -> list[ModelVersion]:
        return [e for versions in self._models.values() for e in versions.values()]

    def names(self) -> list[str]:
        return list(self._models)
