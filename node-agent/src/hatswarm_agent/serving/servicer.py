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
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from hatswarm_agent import __version__
from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_agent.protocol.wire import HOP_KEY, MESSAGES_PARAM, NODE_METADATA_KEY
from hatswarm_agent.serving import streaming
from hatswarm_agent.serving.dataplane import DataPlane
from hatswarm_agent.serving.errors import AgentError, InvalidInputError, grpc_errors, status_for
from hatswarm_agent.serving.generation import Generate, LocalStream, is_generative
from hatswarm_agent.serving.modelconfig import model_config, repository_index
from hatswarm_agent.serving.registry import ModelRegistry
from hatswarm_agent.serving.shm import SharedMemoryRegions, SharedMemoryRpcs
from hatswarm_agent.serving.tensors import LARGE_REQUEST_BYTES, check_wire_limits

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


class PoolModels(Protocol):
    """Readiness, metadata and config of models this node does not serve, from a replica of the pool
    (routing.dispatcher.Dispatcher): each answer comes with the node that gave it."""

    async def model_ready(self, request: pb.ModelReadyRequest) -> tuple[bool, str]: ...

    async def model_metadata(
        self, request: pb.ModelMetadataRequest
    ) -> tuple[pb.ModelMetadataResponse, str] | None: ...

    async def model_config(
        self, request: pb.ModelConfigRequest
    ) -> tuple[pb.ModelConfigResponse, str] | None: ...


def _is_hop(context: Any) -> bool:
    """A peer asking on a client's behalf: answer for this node only."""
    return any(key == HOP_KEY for key, _ in context.invocation_metadata() or ())


class InferenceServicer(SharedMemoryRpcs, pb_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the data plane (shared memory RPCs: shm.py).

    With `pool`, the pool answers as one server: ModelReady and ModelMetadata of a model this
    node does not serve are a replica's answers, so a client behind the pool's Service gets the
    same answer whichever agent it reaches. The response metadata `x-hatswarm-node` names the
    node that answered (this one for its own models).
    """

    def __init__(
        self,
        dataplane: DataPlane,
        infer: Infer,
        generate: Generate,
        pool: PoolModels | None = None,
        node_name: str = "",
        shm: SharedMemoryRegions | None = None,
    ) -> None:
        self.shm_regions = shm
        self._dataplane = dataplane
        self._registry = dataplane.registry
        self._state = dataplane.state
        self._infer = infer
        self._generate = generate
        self._pool = pool
        self._node = node_name

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
            ready, node = False, ""
            if self._pool is not None and not _is_hop(context):
                ready, node = await self._pool.model_ready(request)
        else:
            ready, node = True, self._node
        await _say_node(context, node)
        return pb.ModelReadyResponse(ready=ready)

    @grpc_errors
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        try:
            response = model_metadata(self._registry, request.name, request.version)
        except AgentError as exc:
            ask = self._pool.model_metadata if self._pool is not None else None
            return await _from_replica(ask, request, context, exc)
        await _say_node(context, self._node)
        return response

    @grpc_errors
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        return await self._infer(request, context)

    @grpc_errors
    async def ModelInferBytes(  # noqa: N802
        self, data: bytes, context: Any
    ) -> pb.ModelInferResponse:
        """ModelInfer from its serialized request (add_to_server registers it so): a large one
        is checked against the tensor limits unparsed, then parsed off the event loop."""
        try:
            if len(data) >= LARGE_REQUEST_BYTES:
                self._dataplane.trim_later()
                check_wire_limits(data, self._dataplane.limits)
                request = await self._dataplane.off_loop(pb.ModelInferRequest.FromString, data)
            else:
                request = pb.ModelInferRequest.FromString(data)
        except DecodeError as exc:
            raise InvalidInputError(
                f"the request is not a valid ModelInferRequest: {exc}"
            ) from None
        del data
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
                        report_load(response.infer_response, stream)
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
                raw=asked.raw, node=stream.node, route=stream.route, timings=stream.timings,
            )  # fmt: skip
            if hop and isinstance(stream, LocalStream):  # the load as this sequence ends
                report_load(final.infer_response, stream)
            out.put_nowait(final)
        finally:
            await stream.aclose()

    @grpc_errors
    async def ModelConfig(  # noqa: N802
        self, request: pb.ModelConfigRequest, context: Any
    ) -> pb.ModelConfigResponse:
        try:
            entry = self._registry.get(request.name, request.version)
        except AgentError as exc:  # a replica's config: what perf_analyzer asks first, via the pool
            ask = self._pool.model_config if self._pool is not None else None
            return await _from_replica(ask, request, context, exc)
        platform = PLATFORMS.get(entry.backend, entry.backend)
        await _say_node(context, self._node)
        return pb.ModelConfigResponse(config=model_config(entry, platform))

    async def RepositoryIndex(  # noqa: N802
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        return repository_index(self._registry, request.ready)


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


async def _from_replica(
    ask: Callable[[_Request], Awaitable[tuple[_Response, str] | None]] | None,
    request: _Request,
    context: Any,
    missing: AgentError,
) -> _Response:
    """A model this node does not hold: a replica's answer, naming the node it came from;
    `missing` (NOT_FOUND) when none has it, or when a peer asks on a client's behalf (a hop)."""
    if ask is None or _is_hop(context):
        raise missing
    answer = await ask(request)
    if answer is None:
        raise missing
    response, node = answer
    await _say_node(context, node)
    return response


async def _say_node(context: Any, node: str) -> None:
    if node:
        await context.send_initial_metadata(((NODE_METADATA_KEY, node),))


_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register the OIP service: every method as the generated code would, except ModelInfer,
    which receives its request serialized (InferenceServicer.ModelInferBytes)."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        response = getattr(pb, method.output_type.name)
        behaviour = getattr(servicer, method.name)
        deserializer = getattr(pb, method.input_type.name).FromString
        if method.name == "ModelInfer":
            behaviour, deserializer = servicer.ModelInferBytes, None
        make = _HANDLER_KINDS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            behaviour,
            request_deserializer=deserializer,
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def report_load(response: pb.ModelInferResponse, stream: LocalStream) -> None:
    """A hop's generation answer reports this node's load in sequences and KV cache use (the
    forwarding agent scores peers on it, routing/policy.py)."""
    load = stream.load
    if load is None:
        return
    params.set_queue_depth(response, load.active_sequences + load.queued_sequences)
    budget = load.context_tokens_capacity
    params.set_generation_load(
        response, load.max_sequences, load.context_tokens_in_use / budget if budget else 0.0
    )
