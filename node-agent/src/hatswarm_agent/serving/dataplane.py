"""The data plane: one inference request run on this node, protocol objects in and out.

Lookup in the registry, the adapter check, validation and zero-copy decode (tensors.py), the
model's queue (batching.py), one encode, then the model's statistics and metrics. Both the OIP
servicer (servicer.py) and the dispatcher (routing/) call it; it calls neither. Domain errors
raise (errors.py); the servicer turns them into status codes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import ADAPTER_PARAM
from hatswarm_agent.serving.errors import AgentError, status_for
from hatswarm_agent.serving.metrics import AgentMetrics
from hatswarm_agent.serving.registry import ModelRegistry, ModelVersion
from hatswarm_agent.serving.tensors import (
    Buffer,
    decode_request,
    encode_response,
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


class DataPlane:
    """Runs requests on this node's model versions."""

    def __init__(
        self, registry: ModelRegistry, metrics: AgentMetrics, state: ServingState | None = None
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.state = state if state is not None else ServingState()

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
        try:
            queue = entry.queue
            assert queue is not None
            adapter = params.adapter(request) if ADAPTER_PARAM in request.parameters else ""
            if adapter:
                entry.check_adapter(adapter).count(adapter)
            decoded = decode_request(request, entry.inputs, queue.max_batch_size > 0, buffers)
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
        elapsed = time.perf_counter() - start
        entry.stats.record_success(elapsed)
        m = entry.metrics
        if m is not None:
            m.success.inc()
            m.request_duration.observe(elapsed)
            m.queue_duration.observe(result.queue_s)
            m.compute_duration.observe(result.compute_s)
        return response
