"""Run a validation gate against one node: the I/O half of :mod:`validation_gate`.

Once a new version's validation replica is ready on a node, the control loop sends the gate's
samples to that node's OIP endpoint (the agent's own address), each request naming the model
version and carrying the hop marker ``x-hatswarm-hop: 1`` so the agent's router serves it
locally instead of forwarding it. One untimed warm-up call goes first (the first inference on
a freshly loaded model is slower); every sample is then timed on its own and the runs are
judged by :func:`validation_gate.evaluate`.

The OIP stubs are imported lazily, inside :func:`run_gate`: ``hatswarm demo`` and ``loadtest``
import tritonclient in the same process, and both define the protobuf package ``inference``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import numpy.typing as npt
from hatswarm_agent.protocol.datatypes import CONTENTS_FIELD

from hatswarm_operator.control.agentclient import AgentCredentials
from hatswarm_operator.core import gate as vg

if TYPE_CHECKING:
    from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb

HOP_METADATA = (("x-hatswarm-hop", "1"),)

TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
"""Codes that say nothing about the version (the node went away): no verdict, try again."""


class GateUnavailableError(Exception):
    """The node could not be asked (unreachable): the gate has no verdict yet."""


def _encode(t: vg.WireTensor) -> tuple[dict[str, Any], bytes]:
    arr = t.array
    if t.datatype == "BF16":
        # A client holds BF16 as float32; on the wire it is the upper 16 bits of each value.
        bits = np.ascontiguousarray(arr, dtype="<f4").view("<u4") >> 16
        raw = bits.astype("<u2").tobytes()
    else:
        raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}, raw


_TYPED_FIELDS = {k: v for k, v in CONTENTS_FIELD.items() if k != "BYTES"}


def decode_outputs(response: pb.ModelInferResponse) -> dict[str, vg.Output]:
    """A response's outputs as numpy arrays of their datatype and shape (raw or typed)."""
    out: dict[str, vg.Output] = {}
    raw = list(response.raw_output_contents)
    for i, o in enumerate(response.outputs):
        shape = tuple(int(d) for d in o.shape)
        dtype = vg.NP_DTYPES.get(o.datatype)
        arr: npt.NDArray[Any]
        if raw:
            if i >= len(raw):
                continue
            if o.datatype == "BF16":
                bits = np.frombuffer(raw[i], dtype="<u2").astype("<u4") << 16
                arr = bits.view("<f4")
            elif dtype is None:
                continue  # BYTES: not comparable with numeric samples (reported as missing)
            else:
                arr = np.frombuffer(raw[i], dtype=dtype.newbyteorder("<")).astype(dtype)
        else:
            field = _TYPED_FIELDS.get(o.datatype)
            if field is None or dtype is None:
                continue
            arr = np.asarray(list(getattr(o.contents, field)), dtype=dtype)
        try:
            out[o.name] = arr.reshape(shape)
        except ValueError:
            out[o.name] = arr  # wrong element count: evaluate() names the shape mismatch
    return out


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
    from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
    from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

    requests: list[pb.ModelInferRequest] = []
    for i, sample in enumerate(gate.samples):
        try:
            tensors = vg.input_tensors(sample)
        except ValueError as err:
            msg = f"sample {i}: {err}"
            return vg.GateResult(False, msg, (msg,))
        req = pb.ModelInferRequest(model_name=model, model_version=version, id=f"gate-{i}")
        for t in tensors:
            spec, raw = _encode(t)
            req.inputs.add(**spec)
            req.raw_input_contents.append(raw)
        requests.append(req)

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
