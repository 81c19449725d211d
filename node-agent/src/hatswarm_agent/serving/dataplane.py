"""The data plane: one inference request run on this node, protocol objects in and out.

Lookup in the registry, the adapter check, validation and zero-copy decode (tensors.py), the
model's queue (batching.py), one encode, then the model's statistics and metrics. Both the OIP
servicer (servicer.py) and the dispatcher (routing/) call it; it calls neither. Domain errors
raise (errors.py); the servicer turns them into status codes.
"""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import ADAPTER_PARAM, TEXT_INPUT, TEXT_OUTPUT
from hatswarm_agent.serving.batching import Result
from hatswarm_agent.serving.errors import AgentError, status_for
from hatswarm_agent.serving.generation import complete_prompts, is_generative
from hatswarm_agent.serving.metrics import AgentMetrics
from hatswarm_agent.serving.registry import ModelRegistry, ModelVersion
from hatswarm_agent.serving.streaming import model_infer_options
from hatswarm_agent.serving.tensors import (
    DEFAULT_LIMITS,
    Buffer,
    TensorLimits,
    decode_request,
    encode_response,
    is_large,
    select_outputs,
)


@dataclass
class ServingState:
    """Whether the agent accepts work: false until started and once shutdown begins.

    OIP ServerReady also follows the models asked for at start-up: with `strict` (the default,
    as tritonserver's `--strict-readiness`) the server is not ready while one of them is
    loading or failed. grpc.health.v1 is left alone: Kubernetes' liveness probe reads it.
    """

    ready: bool = False
    required: tuple[tuple[str, str], ...] = ()  # (name, version) asked for at start-up
    strict: bool = True

    def is_ready(self, registry: ModelRegistry) -> bool:
        if not self.ready:
            return False
        if self.strict:
            for name, version in self.required:
                entry = registry.find(name, version)
                if entry is not None and not entry.ready:  # unloaded on purpose: not required
                    return False
        return True


def _trim_memory() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise: RSS would stay at the peak of
    the biggest request ever decoded)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    """glibc, with big allocations always mapped on their own (so freeing one returns it):
    by default glibc raises that threshold to the largest block freed so far (up to 32 MiB),
    after which a big request's buffers land in the heap and stay resident."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except (OSError, AttributeError):
        return None
    return libc


_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 20
_LIBC = _libc()
TRIM_AFTER_S = 0.5
_T = TypeVar("_T")


class DataPlane:
    """Runs requests on this node's model versions.

    A large request (tensors.is_large) is decoded, and its answer encoded, on one worker
    thread instead of the event loop, so health checks and small requests keep flowing; one
    at a time, which also bounds the memory big requests can take together; afterwards the
    freed memory is returned to the OS.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: AgentMetrics,
        state: ServingState | None = None,
        limits: TensorLimits = DEFAULT_LIMITS,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.state = state if state is not None else ServingState()
        self.limits = limits
        self._heavy = ThreadPoolExecutor(max_workers=1, thread_name_prefix="large-tensors")

    async def infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        """The servicer's `infer` when nothing routes: every request runs here."""
        return await self.serve(request)

    async def serve(
        self,
        request: pb.ModelInferRequest,
        entry: ModelVersion | None = None,
        *,
        buffers: Mapping[int, Buffer] | None = None,
        into: Mapping[str, memoryview] | None = None,
    ) -> pb.ModelInferResponse:
        """Run `request` here (on `entry` when the caller already looked it up); `buffers`
        and `into` are the inputs and outputs a client keeps in shared memory (shm.py).

        One coroutine frame, no per-request allocations beyond the decoded arrays, the queue's
        result and the response: this runs for every request on the event loop.
        """
        start = time.perf_counter()
        if entry is None:
            try:
                entry = self.registry.get(request.model_name, request.model_version)
            except AgentError as exc:
                self.metrics.failure_without_model(exc.reason)
                raise
        if is_generative(entry):
            return await self._serve_generation(request, entry, buffers, into)
        try:
            queue = entry.queue
            assert queue is not None
            adapter = params.adapter(request) if ADAPTER_PARAM in request.parameters else ""
            if adapter:
                entry.check_adapter(adapter).count(adapter)
            batchable = queue.max_batch_size > 0
            if buffers is None and is_large(request):
                return await self._serve_large(request, entry, adapter, start)
            decoded = decode_request(request, entry.inputs, batchable, self.limits, buffers)
            outputs = select_outputs(request, entry.outputs)
            result = await queue.submit(decoded, adapter)
            response = encode_response(
                request, entry.version, result.outputs, outputs, decoded.raw, into
            )
        except Exception as exc:
            entry.stats.failure += 1
            if entry.metrics is not None:
                entry.metrics.failure(status_for(exc)[2])
            raise
        self._succeeded(entry, start, result)
        return response

    async def _serve_generation(
        self,
        request: pb.ModelInferRequest,
        entry: ModelVersion,
        buffers: Mapping[int, Buffer] | None,
        into: Mapping[str, memoryview] | None,
    ) -> pb.ModelInferResponse:
        """ModelInfer of a generative model: the vLLM-style tensors (streaming.py) decoded as
        any request's, then generated as a stream is (counted the same: serving/generation.py)."""
        try:
            decoded = decode_request(request, entry.inputs, False, self.limits, buffers)
            outputs = select_outputs(request, entry.outputs)
            sampling, exclude = model_infer_options(decoded.inputs, request.parameters)
        except Exception as exc:
            entry.stats.failure += 1
            if entry.metrics is not None:
                entry.metrics.failure(status_for(exc)[2])
            raise
        texts = await complete_prompts(
            entry, decoded.inputs[TEXT_INPUT], sampling, exclude, self.metrics.tokens
        )
        return encode_response(
            request, entry.version, {TEXT_OUTPUT: texts}, outputs, decoded.raw, into
        )

    @staticmethod
    def _succeeded(entry: ModelVersion, start: float, result: Result) -> None:
        elapsed = time.perf_counter() - start
        entry.stats.record_success(elapsed)
        m = entry.metrics
        if m is not None:
            m.success.inc()
            m.request_duration.observe(elapsed)
            m.queue_duration.observe(result.queue_s)
            m.compute_duration.observe(result.compute_s)

    async def _serve_large(
        self, request: pb.ModelInferRequest, entry: ModelVersion, adapter: str, start: float
    ) -> pb.ModelInferResponse:
        """`serve` for a large request: decode and encode on the worker, then trim memory."""
        queue = entry.queue
        assert queue is not None
        loop = asyncio.get_running_loop()
        try:
            decoded = await loop.run_in_executor(
                self._heavy, decode_request, request, entry.inputs, queue.max_batch_size > 0,
                self.limits,
            )  # fmt: skip
            outputs = select_outputs(request, entry.outputs)
            result = await queue.submit(decoded, adapter)
            del decoded
            response = await loop.run_in_executor(
                self._heavy, encode_response, request, entry.version, result.outputs, outputs,
                bool(request.raw_input_contents),
            )  # fmt: skip
        finally:
            self.trim_later()
        self._succeeded(entry, start, result)
        return response

    async def off_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(*args)` on the large-tensor worker (one at a time)."""
        return await asyncio.get_running_loop().run_in_executor(self._heavy, fn, *args)

    def trim_later(self) -> None:
        """Return freed memory to the OS once a large request (and its buffers) are gone."""
        loop = asyncio.get_running_loop()
        loop.call_later(TRIM_AFTER_S, lambda: loop.run_in_executor(self._heavy, _trim_memory))

    def close(self) -> None:
        self._heavy.shutdown(wait=False, cancel_futures=True)
