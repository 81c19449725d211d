"""Generations across the pool: this node when it holds the model and has a free sequence slot,
else a peer, over Triton's ModelStreamInfer (serving/streaming.py has the messages).

Load is counted in tokens and sequences: a peer's load is the generations this agent has
running there (`outstanding`) and what the peer reported on its last first and final responses
(active + queued sequences, its sequence slots, the share of its KV cache budget in use), and
peers are scored on it as the Gateway API Inference Extension scores model servers
(policy.generation_score: affinity, then free slots, then free KV cache).

Affinity: a conversation goes back to the node that holds its KV cache (its prefix cache, see
backends/genai.py). Its key is the client's session id, else the prompt's head
(policy.affinity_key); the node is the key's rendezvous hash over the replicas this agent sees,
this node included when it holds the model, so every agent of the pool picks the same node
without sharing state. The affine node is taken while it has room (a full one is skipped, like
any full replica); this node takes a request it has a free slot for unless the affinity names
an open peer. A local model without a free slot still takes the request when no peer is open
(its own wait queue is the backlog); one that refuses (BackendBusyError) sends it on to a peer.

ModelInfer (gRPC, KServe v2 REST) goes through `infer`: the dispatcher's routing, and a
generative model's prompt over its context escalated to the cloud as a generation's is (the
route's long-prompt rule, the cloud's share), answered as the one `text_output` the model would
give. The node that holds the model measures the prompt, so it escalates: an entry that
forwarded the request gets the cloud's answer back from it.

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
import math
import struct
import time
from dataclasses import replace
from typing import Any

import grpc

from hatswarm_agent.backends.generation import (
    BackendBusyError,
    ContextLengthError,
    FinishReason,
    Piece,
    Timings,
    Usage,
)
from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.auth import Metadata, MetadataSource
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import (
    DEPTH_PARAM,
    HOP_KEY,
    HOP_METADATA,
    NODE_CLOUD,
    ROUTE_CLOUD,
    ROUTE_LOCAL,
    ROUTE_PEER,
    STREAM_INFER_METHOD,
    TEXT_OUTPUT,
)
from hatswarm_agent.routing.cloudgen import CloudGenerations
from hatswarm_agent.routing.dispatcher import Dispatcher
from hatswarm_agent.routing.forwarding import AttemptFailedError
from hatswarm_agent.routing.policy import (
    CloudGenerationRules,
    PeerState,
    VersionRoute,
    affinity_key,
    pick_version,
    rendezvous,
)
from hatswarm_agent.serving import streaming
from hatswarm_agent.serving.errors import (
    AgentError,
    DeadlineError,
    ForwardedError,
    NoReplicaError,
    SaturatedError,
    StreamBrokenError,
)
from hatswarm_agent.serving.generation import (
    GenerationCall,
    Generations,
    LocalStream,
    PieceStream,
)
from hatswarm_agent.serving.registry import ModelVersion

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
        # A peer that sent the generation on to the cloud says so on its first response.
        self.route = ROUTE_CLOUD if params.route_of(first) == ROUTE_CLOUD else ROUTE_PEER
        self.finish_reason: FinishReason | None = None
        self.timings: Timings | None = None  # the peer's runtime time, with its end
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
                take_load_report(self._peer, response)
                reason, self._usage = streaming.read_end(response)
                self.timings = streaming.read_timings(response)
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


class HeldStream:
    """A local generation whose first pieces were held back (to judge them), replayed first."""

    route = ROUTE_LOCAL

    def __init__(self, held: list[Piece], stream: LocalStream) -> None:
        self._held = held
        self._stream = stream
        self.node = stream.node

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._stream.finish_reason

    @property
    def usage(self) -> Usage:
        return self._stream.usage

    @property
    def timings(self) -> Timings | None:
        return self._stream.timings

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> Piece:
        if self._held:
            return self._held.pop(0)
        return await self._stream.__anext__()

    async def aclose(self) -> None:
        await self._stream.aclose()


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
        self.cloud = CloudGenerations(dispatcher.cloud, dispatcher.metrics, local.metrics.tokens)

    async def close(self) -> None:
        await self.cloud.close()

    async def infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        """ModelInfer (the servicer's and the KServe door's `infer`): the dispatcher's, with a
        generative model's prompt over its context sent to the cloud when its route says so."""
        d = self.dispatcher
        hop = any(key == HOP_KEY for key, _ in context.invocation_metadata() or ())
        if hop and self.local.local_entry(request.model_name, request.model_version):
            d.cloud.window.request()  # as a forwarded generation counts here (see generate)
        start = time.monotonic()
        try:
            return await d.infer(request, context)
        except ContextLengthError as exc:
            compiled = d.compiled()
            routes = compiled.routes(request.model_name)
            route = pick_version(routes, d.balancer.rng, request.model_version) if routes else None
            rules = route.cloud_generation if route is not None else None
            if rules is None or not rules.long_prompts or not self.cloud.enabled:
                raise
            try:
                call = streaming.decode_generation(request).call
            except AgentError:  # inputs a generation does not take: the context error stands
                raise exc from None
            if not self.cloud.allow():
                raise SaturatedError(
                    f"{exc}; the cloud fallback, which takes such prompts, is at its share "
                    f"limit ({d.cloud.config.max_share:.0%} of recent requests)"
                ) from None
            d.metrics.escalations.labels(call.model, "cloud").inc()
            budget = d.config.timeout_s(compiled)
            remaining = context.time_remaining()
            if remaining is not None and math.isfinite(remaining):
                budget = min(budget, remaining)
            stream = await self._to_cloud(call, route, start + budget, exc.prompt_tokens)
            try:
                text = "".join([piece.text async for piece in stream])
            finally:
                await stream.aclose()
            return cloud_text_response(request, text)

    async def _to_cloud(
        self,
        call: GenerationCall,
        route: VersionRoute | None,
        deadline: float,
        prompt_tokens: int = 0,
    ) -> PieceStream:
        rules = route.cloud_generation if route is not None else None
        cloud_model = rules.cloud_model if rules is not None else ""
        return await self.cloud.start(call, cloud_model, deadline - time.monotonic(), prompt_tokens)

    async def _start_here(
        self,
        call: GenerationCall,
        entry: ModelVersion | None,
        route: VersionRoute | None,
        deadline: float,
    ) -> PieceStream:
        """`call` on this node, unless its route escalates it to the cloud: a prompt over the
        model's context, or (judged on the first tokens) an answer the model is unsure of."""
        rules = route.cloud_generation if route is not None else None
        judged = rules is not None and rules.logprob_tokens > 0 and self.cloud.enabled
        window = rules.logprob_tokens if rules is not None and judged else 0
        here = replace(call, params=replace(call.params, logprobs=window)) if judged else call
        try:
            stream = await self.local.start(here, entry)
        except ContextLengthError as exc:
            if rules is None or not rules.long_prompts or not self.cloud.enabled:
                raise
            if not self.cloud.allow():
                raise SaturatedError(
                    f"{exc}; the cloud fallback, which takes such prompts, is at its share "
                    f"limit ({self.dispatcher.cloud.config.max_share:.0%} of recent requests)"
                ) from None
            self.dispatcher.metrics.escalations.labels(call.model, "cloud").inc()
            return await self._to_cloud(call, route, deadline, exc.prompt_tokens)
        if not judged:
            return stream
        assert rules is not None
        return await self._judge(stream, call, route, rules, deadline)

    async def _judge(
        self,
        stream: LocalStream,
        call: GenerationCall,
        route: VersionRoute | None,
        rules: CloudGenerationRules,
        deadline: float,
    ) -> PieceStream:
        """Hold the first `rules.logprob_tokens` tokens back; under the threshold (and within
        the cloud's share) the edge answer is dropped and the cloud's is streamed instead."""
        held: list[Piece] = []
        tokens, judged_tokens, logprob = 0, 0, 0.0
        try:
            async for piece in stream:
                held.append(piece)
                if piece.logprob is not None:  # only the window's tokens carry log-probs
                    judged_tokens += min(piece.tokens, rules.logprob_tokens - tokens)
                    logprob += piece.logprob
                tokens += piece.tokens
                if tokens >= rules.logprob_tokens:
                    break
        except BaseException:
            await stream.aclose()
            raise
        mean = logprob / judged_tokens if judged_tokens else None
        if mean is None:  # the runtime gives no log-probabilities: nothing to judge by
            self.dispatcher.metrics.escalations.labels(call.model, "unjudged").inc()
        elif mean < rules.min_mean_logprob and self.cloud.allow():
            prompt_tokens = stream.usage.prompt_tokens
            await stream.aclose()
            self.dispatcher.metrics.escalations.labels(call.model, "cloud").inc()
            return await self._to_cloud(call, route, deadline, prompt_tokens)
        return HeldStream(held, stream)

    async def generate(self, call: GenerationCall, context: Any) -> PieceStream:
        """The stream of `call`, from this node, a peer or the cloud; errors before the first
        piece raise."""
        d = self.dispatcher
        d.cloud.window.request()
        compiled = d.compiled()
        budget = d.config.timeout_s(compiled)
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining)
        deadline = time.monotonic() + budget
        routes = compiled.routes(call.model)
        route = pick_version(routes, d.balancer.rng, call.version) if routes else None
        for key, _ in context.invocation_metadata() or ():
            if key == HOP_KEY:  # forwarded to us: here (or escalated to the cloud) or nowhere
                return await self._start_here(call, None, route, deadline)
        if route is not None and route.version and not call.version:
            call = replace(call, version=route.version)  # peers serve the version drawn here
        replicas = route.replicas if route is not None else []
        key = affinity_key(call.prompt, call.session)
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
            affine = ""
            if key:
                # Without the failed and ejected: their keys move on, each to one node.
                nodes = [
                    r.peer.node
                    for r in replicas
                    if r.peer.address not in failed and not r.peer.ejected
                ]
                affine = rendezvous(key, [*nodes, self.local.node] if entry else nodes)
            peer, saturated = d.balancer.choose_generation(replicas, now, limit, failed, affine)
            to_affine_peer = peer is not None and bool(affine) and peer.node == affine
            if entry is not None and (
                peer is None or (self.local.has_free_slot(entry) and not to_affine_peer)
            ):
                tried_here = True
                try:
                    local = await self._start_here(call, entry, route, deadline)
                except BackendBusyError as exc:  # slots and wait queue full: a peer may take it
                    busy, last = True, exc
                    continue
                if local.route == ROUTE_LOCAL:
                    d.metrics.routed(call.model, ROUTE_LOCAL).inc()
                    if affine:
                        d.metrics.affinity(call.model, affine == self.local.node).inc()
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
            if affine:
                d.metrics.affinity(call.model, to_affine_peer).inc()
            return stream
        if route is not None and route.cloud_fallback and self.cloud.enabled:
            if self.cloud.allow():
                return await self._to_cloud(call, route, deadline)
            raise SaturatedError(
                f"no replica can generate with model '{call.model}' and the cloud fallback is "
                f"at its share limit ({d.cloud.config.max_share:.0%} of recent requests)"
            )
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
        peer.consecutive_failures = 0
        peer.ejections = 0
        take_load_report(peer, first)
        return RemoteStream(rpc, first, peer, on_end)


def cloud_text_response(request: pb.ModelInferRequest, text: str) -> pb.ModelInferResponse:
    """The ModelInfer answer a generative model gives (`text_output`, BYTES [1], raw when the
    request was), with the cloud's completion, tagged as the cloud's."""
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=request.model_version, id=request.id
    )
    data = text.encode("utf-8")
    tensor = response.outputs.add(name=TEXT_OUTPUT, datatype="BYTES", shape=[1])
    if request.raw_input_contents:
        response.raw_output_contents.append(struct.pack("<I", len(data)) + data)
    else:
        tensor.contents.bytes_contents.append(data)
    return params.tag(response, NODE_CLOUD, ROUTE_CLOUD)


def take_load_report(peer: PeerState, response: pb.ModelInferResponse) -> None:
    """Fold the load a peer's generation answer reports into what we know of it (and take the
    report off the answer: it is for this hop only)."""
    depth = params.pop_queue_depth(response) if DEPTH_PARAM in response.parameters else -1
    slots, kv_use = params.pop_generation_load(response)
    peer.on_generation_load(depth, slots, kv_use, time.monotonic())
