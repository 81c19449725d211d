"""The Open Inference Protocol (KServe v2) gRPC servicer: protobuf in, domain calls, protobuf out.

ModelInfer is the hot path: one registry lookup, validation and zero-copy decode (tensors.py),
the model's queue (batching.py), one encode. Errors become status codes in errors.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from hatswarm_agent import __version__
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_agent.serving.adapters import UnknownAdapterError
from hatswarm_agent.serving.errors import AgentError, InvalidInputError, grpc_errors, status_for
from hatswarm_agent.serving.metrics import AgentMetrics
from hatswarm_agent.serving.registry import ModelRegistry, ModelVersion
from hatswarm_agent.serving.tensors import decode_request, encode_response, select_outputs

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "hailo": "hailo_hef", "simulated": "simulated_npu"}


class Router(Protocol):
    """Answers one inference request: here, on a peer, from the cache or in the cloud."""

    async def infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse: ...


@dataclass
class ServingState:
    """Whether the agent accepts work: false until started and once shutdown begins."""

    ready: bool = False


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the model registry."""

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: AgentMetrics,
        state: ServingState,
        router: Router | None = None,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._state = state
        self.router = router

    async def ServerLive(  # noqa: N802
        self, request: pb.ServerLiveRequest, context: Any
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Any
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._state.ready)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="hatswarm-agent", version=__version__)

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        try:
            self._registry.get(request.name, request.version)
        except AgentError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @grpc_errors
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        entry = self._registry.get(request.name, request.version)
        batch = entry.queue is not None and entry.queue.max_batch_size > 0
        response = pb.ModelMetadataResponse(
            name=entry.name,
            versions=self._registry.ready_versions(entry.name),
            platform=PLATFORMS.get(entry.backend, entry.backend),
        )
        for spec in entry.inputs:
            shape = (-1, *spec.shape[1:]) if batch else spec.shape
            response.inputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
        for spec in entry.outputs:
            shape = (-1, *spec.shape[1:]) if batch else spec.shape
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
        return response

    @grpc_errors
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        if self.router is not None:
            return await self.router.infer(request, context)
        return await self.serve_local(request)

    async def serve_local(
        self, request: pb.ModelInferRequest, entry: ModelVersion | None = None
    ) -> pb.ModelInferResponse:
        """Run the request on this node (the router's `local` route); domain errors raise.

        One coroutine frame, no per-request allocations beyond the decoded arrays, the queue's
        result and the response: this runs for every request on the event loop.
        """
        start = time.perf_counter()
        if entry is None:
            try:
                entry = self._registry.get(request.model_name, request.model_version)
            except AgentError as exc:
                self._metrics.failure_without_model(exc.reason)
                raise
        try:
            queue = entry.queue
            assert queue is not None
            adapter = requested_adapter(request) if "adapter" in request.parameters else ""
            if adapter:
                if entry.adapters is None:
                    raise UnknownAdapterError(
                        f"adapter '{adapter}' is not known for model '{entry.name}' "
                        f"version '{entry.version}' (known: none)"
                    )
                entry.adapters.check(adapter)
                entry.adapters.count(adapter)
            decoded = decode_request(request, entry.inputs, queue.max_batch_size > 0)
            outputs = select_outputs(request, entry.outputs)
            result = await queue.submit(decoded, adapter)
            response = encode_response(request, entry.version, result.outputs, outputs, decoded.raw)
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


def requested_adapter(request: pb.ModelInferRequest) -> str:
    """The LoRA adapter a request names (request parameter `adapter`); "" for the base model."""
    if "adapter" not in request.parameters:
        return ""
    param = request.parameters["adapter"]
    if param.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInputError("request parameter 'adapter' must be a string")
    return param.string_param
