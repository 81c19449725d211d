"""The Open Inference Protocol (KServe v2) gRPC servicer: protobuf in, domain calls, protobuf out.

Conversion only. ModelInfer goes to the one `infer` callable it was given (the dispatcher's
when the agent routes, else the data plane's); ModelStreamInfer (Triton's streaming extension)
sends generations to the one `generate` callable (the router's, else this node's: see
streaming.py for the tensors) and anything else to `infer`, one final response each; the rest
reads the data plane's registry and state. Errors become status codes in errors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from hatswarm_agent import __version__
from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_agent.protocol.wire import HOP_KEY, MESSAGES_PARAM
from hatswarm_agent.serving import streaming
from hatswarm_agent.serving.dataplane import DataPlane
from hatswarm_agent.serving.errors import AgentError, grpc_errors, status_for
from hatswarm_agent.serving.generation import Generate, LocalStream, is_generative
from hatswarm_agent.serving.modelconfig import model_config, repository_index
from hatswarm_agent.serving.registry import ModelRegistry
from hatswarm_agent.serving.shm import SharedMemoryRegions, SharedMemoryRpcs

log = logging.getLogger(__name__)

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "hailo": "hailo_hef", "simulated": "simulated_npu"}


def model_metadata(registry: ModelRegistry, name: str, version: str) -> pb.ModelMetadataResponse:
    """A model version's OIP metadata (gRPC and REST); dim 0 is -1 when the model batches."""
    entry = registry.get(name, version)
    batch = entry.queue is not None and entry.queue.max_batch_size > 0
    response = pb.ModelMetadataResponse(
        name=entry.name,
        versions=registry.ready_versions(entry.name),
        platform=PLATFORMS.get(entry.backend, entry.backend),
    )
    for spec in entry.inputs:
        shape = (-1, *spec.shape[1:]) if batch else spec.shape
        response.inputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
    for spec in entry.outputs:
        shape = (-1, *spec.shape[1:]) if batch else spec.shape
        response.outputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
    return response


# Answers one inference request: here, on a peer, from the cache or in the cloud.
Infer = Callable[[pb.ModelInferRequest, Any], Awaitable[pb.ModelInferResponse]]


class InferenceServicer(SharedMemoryRpcs, pb_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the data plane (shared memory RPCs: shm.py)."""

    def __init__(
        self,
        dataplane: DataPlane,
        infer: Infer,
        generate: Generate,
        shm: SharedMemoryRegions | None = None,
    ) -> None:
        self.shm_regions = shm
        self._registry = dataplane.registry
        self._state = dataplane.state
        self._infer = infer
        self._generate = generate

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
        return model_metadata(self._registry, request.name, request.version)

    @grpc_errors
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        return await self._infer(request, context)

    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Many requests in, their responses out as they come (interleaved, ids echoed).

        Each request runs as its own task; a failed one answers with `error_message` and the
        stream stays open. The call ends once the client closed its side and every request
        has had its final response; a client that goes away cancels what is still running.
        """
        responses: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.create_task(self._stream_one(request, context, responses))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while tasks:
                    await asyncio.wait(set(tasks))
            finally:
                responses.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await responses.get()) is not None:
                yield response
        finally:
            for task in (reader, *tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await asyncio.gather(reader, *tasks, return_exceptions=True)

    def _generates(self, request: pb.ModelInferRequest) -> bool:
        """A generation when this node's version is generative, or, for a model it does not
        hold, when the request carries generation inputs; always with chat messages."""
        if MESSAGES_PARAM in request.parameters:
            return True
        try:
            entry = self._registry.get(request.model_name, request.model_version)
        except AgentError:
            return streaming.is_generation_request(request)
        return is_generative(entry)

    async def _stream_one(
        self,
        request: pb.ModelInferRequest,
        context: Any,
        out: asyncio.Queue[pb.ModelStreamInferResponse | None],
    ) -> None:
        try:
            if self._generates(request):
                await self._generation(request, context, out)
            else:
                out.put_nowait(streaming.unary_response(await self._infer(request, context)))
        except Exception as exc:
            if status_for(exc)[0] is grpc.StatusCode.INTERNAL:
                log.exception("ModelStreamInfer request failed")
            out.put_nowait(streaming.error_response(request, exc))

    async def _generation(
        self,
        request: pb.ModelInferRequest,
        context: Any,
        out: asyncio.Queue[pb.ModelStreamInferResponse | None],
    ) -> None:
        asked = streaming.decode_generation(request)
        stream = await self._generate(asked.call, context)
        # A peer forwarded it: the first response reports this node's load in sequences.
        hop = any(key == HOP_KEY for key, _ in context.invocation_metadata() or ())
        try:
            text: str | None
            if asked.stream:
                node = stream.node
                async for piece in stream:
                    response = streaming.piece_response(
                        request, piece, asked.raw, node, stream.route
                    )
                    if hop and node and isinstance(stream, LocalStream):
                        params.set_queue_depth(response.infer_response, stream.depth)
                    out.put_nowait(response)
                    node = ""  # the first response names the node; the final one again
                text = None if asked.empty_final else ""
            else:
                text = "".join([piece.text async for piece in stream])
                prompt = asked.call.prompt
                if not asked.exclude_input and isinstance(prompt, str):
                    text = prompt + text
            final = streaming.final_response(
                request, stream.finish_reason or "stop", stream.usage, text=text,
                raw=asked.raw, node=stream.node, route=stream.route,
            )  # fmt: skip
            out.put_nowait(final)
        finally:
            await stream.aclose()

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
