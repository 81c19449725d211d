"""The Open Inference Protocol (KServe v2) gRPC servicer: protobuf in, domain calls, protobuf out.

Conversion only. ModelInfer goes to the one `infer` callable it was given (the dispatcher's
when the agent routes, else the data plane's); the rest reads the data plane's registry and
state. Errors become status codes in errors.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hatswarm_agent import __version__
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_agent.serving.dataplane import DataPlane
from hatswarm_agent.serving.errors import AgentError, grpc_errors
from hatswarm_agent.serving.modelconfig import model_config, repository_index

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "hailo": "hailo_hef", "simulated": "simulated_npu"}

# Answers one inference request: here, on a peer, from the cache or in the cloud.
Infer = Callable[[pb.ModelInferRequest, Any], Awaitable[pb.ModelInferResponse]]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the data plane."""

    def __init__(self, dataplane: DataPlane, infer: Infer) -> None:
        self._registry = dataplane.registry
        self._state = dataplane.state
        self._infer = infer

    async def ServerLive(  # noqa: N802
        self, request: pb.ServerLiveRequest, context: Any
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Any
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._state.is_ready(self._registry))

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
        return await self._infer(request, context)

    @grpc_errors
    async def ModelConfig(  # noqa: N802
        self, request: pb.ModelConfigRequest, context: Any
    ) -> pb.ModelConfigResponse:
        entry = self._registry.get(request.name, request.version)
        platform = PLATFORMS.get(entry.backend, entry.backend)
        return pb.ModelConfigResponse(config=model_config(entry, platform))

    async def RepositoryIndex(  # noqa: N802
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        return repository_index(self._registry, request.ready)
