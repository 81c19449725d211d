"""Generations across the pool: this node when it holds the model and has a free sequence slot,
else a peer, over Triton's ModelStreamInfer (serving/streaming.py has the messages).

Load is counted in sequences: a peer's load is the generations this agent has running there
(`outstanding`) and the active + queued sequences the peer reported on its last first
response (`hatswarm.queue_depth`), so the balancing policies (policy.py) compare sequences. A
local model without a free slot still takes the request when no peer is open (its own wait
queue is the backlog); one that refuses (BackendBusyError) sends it on to a peer.

Failover: until a peer has sent its first piece, nothing has reached the caller, so a peer that
refuses, dies or stays silent past the routing budget is retried on another replica
transparently (within the table's retry budget). Once a piece is out, a lost peer ends the
stream with StreamBrokenError: the front doors turn it into an error event, never a silently
short answer. A generation a peer forwarded (the hop marker) runs here or fails.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import replace
from typing import Any

import grpc

from hatswarm_agent.backends.generation import BackendBusyError, FinishReason, Piece, Usage
from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.auth import Metadata, MetadataSource
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import (
    DEPTH_PARAM,
    HOP_KEY,
    HOP_METADATA,
    ROUTE_LOCAL,
    ROUTE_PEER,
    STREAM_INFER_METHOD,
)
from hatswarm_agent.routing.dispatcher import Dispatcher
from hatswarm_agent.routing.forwarding import AttemptFailedError
from hatswarm_agent.routing.policy import PeerState, pick_version
from hatswarm_agent.serving import streaming
from hatswarm_agent.serving.errors import (
    DeadlineError,
    ForwardedError,
    NoReplicaError,
    SaturatedError,
    StreamBrokenError,
)
from hatswarm_agent.serving.generation import GenerationCall, Generations, PieceStream

log = logging.getLogger(__name__)


def stream_call(channel: grpc.aio.Channel) -> Any:
    """ModelStreamInfer on `channel`: requests in, ModelStreamInferResponse out."""
    return channel.stream_stream(
        STREAM_INFER_METHOD,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )


class RemoteStream:
    """A generation running on a peer, read from its ModelStreamInfer call."""

    route = ROUTE_PEER

    def __init__(
        self,
        call: Any,
        first: pb.ModelInferResponse,
        peer: PeerState,
        on_end: Any,
    ) -> None:
        self._call = call
        self._pending: pb.ModelInferResponse | None = first
        self._peer = peer
        self._on_end = on_end
        self._done = False
        self._tokens = 0
        self.node = params.answered_by(first, peer.node)
        self.finish_reason: FinishReason | None = None
        self._usage = Usage(0, 0)

    @property
    def usage(self) -> Usage:
        return self._usage

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> Piece:
        while not self._done:
            response = self._pending
            self._pending = None
            if response is None:
                response = await self._read()
            if streaming.is_final(response):
                self._done = True
                reason, self._usage = streaming.read_end(response)
                self.finish_reason = "length" if reason == "length" else "stop"
                self._finish()
                text = streaming.read_text(response)
                if text:  # a final response that still carries text (not ours, but allowed)
                    return Piece(text, 0)
                break
            piece = streaming.read_piece(response)
            self._tokens += piece.tokens
            return piece
        raise StopAsyncIteration

    async def _read(self) -> pb.ModelInferResponse:
        """The next response of this generation; StreamBrokenError when it cannot come."""
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._broken(f"{exc.code().name}: {exc.details()}") from None
        except asyncio.CancelledError:
            self._finish()
            raise
        if message is grpc.aio.EOF:
            raise self._broken("the peer closed the stream before the end")
        if message.error_message:
            raise self._broken(message.error_message)
        response: pb.ModelInferResponse = message.infer_response
        return response

    def _broken(self, why: str) -> StreamBrokenError:
        self._done = True
        self._finish(failed=True)
        return StreamBrokenError(
            f"the generation on {self.node} broke off after {self._tokens} tokens: {why}"
        )

    def _finish(self, failed: bool = False) -> None:
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(failed)

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._call.cancel()
        self._finish()


class GenerationRouter:
    """Answers generations for one agent (the front doors' `generate`)."""

    def __init__(
        self, dispatcher: Dispatcher, local: Generations, tokens: MetadataSource | None = None
    ) -> None:
        self.dispatcher = dispatcher
        self.local = local
        self.tokens = tokens
        self._ids = itertools.count(1)
        self._calls: dict[int, tuple[grpc.aio.Channel, Any]] = {}

    async def generate(self, call: GenerationCall, context: Any) -> PieceStream:
        """The stream of `call`, from this node or a peer; errors before the first piece raise."""
        for key, _ in context.invocation_metadata() or ():
            if key == HOP_KEY:
                return await self.local.start(call)  # forwarded to us: here or nowhere
        d = self.dispatcher
        compiled = d.compiled()
        budget = d.config.timeout_s(compiled)
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining)
        deadline = time.monotonic() + budget
        routes = compiled.routes(call.model)
        route = pick_version(routes, d.balancer.rng, call.version) if routes else None
        if route is not None and route.version and not call.version:
            call = replace(call, version=route.version)  # peers serve the version drawn here
        replicas = route.replicas if route is not None else []
        policy = d.config.policy_for(compiled)
        limit = compiled.table.queue_limit
        retries = d.config.retries_for(compiled)
        failed: set[str] = set()
        failures = 0
        tried_here = False
        busy = False  # some replica (or this node) refused for want of a sequence slot
        last: Exception | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                detail = f": {last}" if last is not None else ""
                raise DeadlineError(f"deadline exceeded routing model '{call.model}'{detail}")
            entry = None if tried_here else self.local.local_entry(call.model, call.version)
            peer, saturated = d.balancer.choose(replicas, now, limit, policy, failed)
            if entry is not None and (peer is None or self.local.has_free_slot(entry)):
                tried_here = True
                try:
                    local = await self.local.start(call, entry)
                except BackendBusyError as exc:  # slots and wait queue full: a peer may take it
                    busy, last = True, exc
                    continue
                d.metrics.routed(call.model, ROUTE_LOCAL).inc()
                return local
            if peer is None:
                busy = busy or saturated
                break
            try:
                stream = await self._forward(peer, call, deadline)
            except AttemptFailedError as exc:
                last = ForwardedError(exc.code, exc.message)
                if not exc.retryable:
                    raise last from None
                failed.add(peer.address)
                if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    busy = True
                else:
                    failures += 1
                    if failures > retries:
                        break
                d.metrics.retries.inc()
                continue
            d.metrics.requests.labels(call.model, ROUTE_PEER).inc()
            return stream
        if busy:
            detail = f": {last}" if last is not None else ""
            raise SaturatedError(
                f"every replica of model '{call.model}' is busy generating{detail}"
            )
        if last is not None and not replicas:
            raise last
        if last is None and not replicas:  # nothing here, nothing routed: say what is missing
            self.local.generative(call.model, call.version)
        tried = ", ".join(sorted(failed)) or "none"
        detail = f"; last error: {last}" if last is not None else ""
        raise NoReplicaError(
            f"no replica of model '{call.model}' is available (tried: {tried}){detail}"
        )

    def _metadata(self) -> Metadata:
        return HOP_METADATA + self.tokens.metadata() if self.tokens is not None else HOP_METADATA

    def _stream_call(self, peer: PeerState) -> Any:
        channel = self.dispatcher.peers.channel(peer.address).channel
        cached = self._calls.get(id(channel))
        if cached is None or cached[0] is not channel:
            cached = self._calls[id(channel)] = (channel, stream_call(channel))
        return cached[1]

    async def _forward(
        self, peer: PeerState, call: GenerationCall, deadline: float
    ) -> RemoteStream:
        """Start `call` on `peer` and wait for its first piece; AttemptFailedError otherwise."""
        d = self.dispatcher
        rpc = self._stream_call(peer)(metadata=self._metadata())
        peer.outstanding += 1
        ended = False

        def on_end(failed: bool) -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            peer.outstanding -= 1
            d.attempts.capacity.wake()
            if failed and peer.on_failure(time.monotonic()):
                d.metrics.ejections.labels(peer.node).inc()
                log.warning("peer %s ejected after repeated failures", peer.node)

        try:
            await rpc.write(streaming.encode_generation(call, str(next(self._ids))))
            await rpc.done_writing()
            message = await asyncio.wait_for(rpc.read(), max(0.001, deadline - time.monotonic()))
        except TimeoutError:
            rpc.cancel()
            on_end(True)
            raise AttemptFailedError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{peer.node}: no first token in time"
            ) from None
        except grpc.aio.AioRpcError as exc:
            on_end(True)
            raise AttemptFailedError(exc.code(), f"{peer.node}: {exc.details()}") from None
        except BaseException:
            rpc.cancel()
            on_end(False)
            raise
        if message is grpc.aio.EOF:
            on_end(True)
            raise AttemptFailedError(
                grpc.StatusCode.UNAVAILABLE, f"{peer.node}: the stream closed without an answer"
            )
        if message.error_message:
            rpc.cancel()
            code = getattr(grpc.StatusCode, streaming.error_code(message), grpc.StatusCode.UNKNOWN)
            now = time.monotonic()
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                peer.on_exhausted(now)
            on_end(False)
            raise AttemptFailedError(code, f"{peer.node}: {message.error_message}")
        first: pb.ModelInferResponse = message.infer_response
        depth = params.pop_queue_depth(first) if DEPTH_PARAM in first.parameters else -1
        now = time.monotonic()
        peer.consecutive_failures = 0
        peer.ejections = 0
        if depth >= 0:
            peer.reported_depth, peer.reported_at = depth, now
        return RemoteStream(rpc, first, peer, on_end)
