"""Run a validation gate against one node: the I/O half of :mod:`hatswarm_operator.core.gate`.

Once a new version's validation replica is ready on a node, the control loop sends the gate's
samples to that node's OIP endpoint (the agent's own address), each request naming the model
version and carrying the hop marker ``x-hatswarm-hop: 1`` so the agent's router serves it
locally instead of forwarding it. One untimed warm-up call goes first (the first inference on
a freshly loaded model is slower); every sample is then timed on its own and the runs are
judged by :func:`gate.evaluate`.

The OIP stubs are imported lazily, inside :func:`run_gate` (and in the converters that build
the requests and decode the responses): ``hatswarm demo`` and ``loadtest`` import tritonclient
in the same process, and both define the protobuf package ``inference``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
from hatswarm_agent.protocol.wire import HOP_METADATA

from hatswarm_operator.control.converters import decode_outputs, infer_request
from hatswarm_operator.control.credentials import AgentCredentials
from hatswarm_operator.core import gate as vg

if TYPE_CHECKING:
    from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb


TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
"""Codes that say nothing about the version (the node went away): no verdict, try again."""


class GateUnavailableError(Exception):
    """The node could not be asked (unreachable): the gate has no verdict yet."""


async def run_gate(
    address: str,
    model: str,
    version: str,
    gate: vg.Gate,
    *,
    timeout_s: float = 30.0,
    channel_options: Mapping[str, Any] | None = None,
    credentials: AgentCredentials | None = None,
) -> vg.GateResult:
    """Send every sample of ``gate`` to ``model@version`` on the agent at ``address``.

    Raises :class:`GateUnavailableError` when the node cannot be reached (no verdict); an
    inference that fails any other way fails its sample. A sample the spec cannot express as a
    tensor fails the gate with that reason.
    """
    from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

    requests: list[pb.ModelInferRequest] = []
    for i, sample in enumerate(gate.samples):
        try:
            tensors = vg.input_tensors(sample)
        except ValueError as err:
            msg = f"sample {i}: {err}"
            return vg.GateResult(False, msg, (msg,))
        requests.append(infer_request(model, version, f"gate-{i}", tensors))

    creds = credentials or AgentCredentials()
    metadata = (*HOP_METADATA, *creds.metadata())
    options = list((channel_options or {}).items())
    async with creds.open_channel(address, options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def call(req: pb.ModelInferRequest) -> vg.SampleRun:
            started = time.perf_counter()
            try:
                resp: pb.ModelInferResponse = await stub.ModelInfer(
                    req, timeout=timeout_s, metadata=metadata
                )
            except grpc.aio.AioRpcError as err:
                if err.code() in TRANSIENT:
                    raise GateUnavailableError(f"{address}: {err.code().name}") from err
                return vg.SampleRun({}, 0.0, f"{err.code().name}: {err.details()}")
            latency = (time.perf_counter() - started) * 1000.0
            return vg.SampleRun(decode_outputs(resp), latency)

        if requests:
            await call(requests[0])  # warm-up, untimed and unjudged
        runs = [await call(r) for r in requests]
    return vg.evaluate(gate, runs)
