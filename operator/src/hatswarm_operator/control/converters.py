"""Every protobuf message the operator sends or reads, converted to and from plain data.

The decisions (`core/`) never see a protobuf: an agent's NodeStatus becomes a
:class:`NodeReport`, a planned :class:`ReplicaLoad` becomes a LoadModelRequest, the plan's
routes become the RoutingTable, and a validation gate's samples become OIP ModelInfer requests
(and the responses numpy arrays again).

The OIP stubs (`grpc_predict_v2_pb2`) are imported inside the functions that need them, never
at module level: ``hatswarm demo`` and ``loadtest`` import tritonclient in the same process,
and both define the protobuf package ``inference``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from hatswarm_agent.protocol.datatypes import CONTENTS_FIELD
from hatswarm_agent.protocol.v1 import control_pb2

from hatswarm_operator.api import InferencePool
from hatswarm_operator.control.credentials import CLOUD_TOKEN_NAME
from hatswarm_operator.core import gate as vg
from hatswarm_operator.core.inventory import ModelObs, ModelState, NodeReport
from hatswarm_operator.core.plan import ReplicaLoad, Route

if TYPE_CHECKING:
    from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb

MODEL_STATES: dict[int, ModelState] = {
    control_pb2.MODEL_STATE_UNSPECIFIED: ModelState.UNKNOWN,
    control_pb2.MODEL_STATE_LOADING: ModelState.LOADING,
    control_pb2.MODEL_STATE_READY: ModelState.READY,
    control_pb2.MODEL_STATE_FAILED: ModelState.FAILED,
    control_pb2.MODEL_STATE_UNLOADING: ModelState.UNLOADING,
}

# --- agent control: status in ------------------------------------------------------------


def model_state(state: int) -> ModelState:
    """The agent's ModelState enum value as the operator's (unknown values: Unknown)."""
    return MODEL_STATES.get(state, ModelState.UNKNOWN)


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def model_observations(status: control_pb2.NodeStatusResponse) -> tuple[ModelObs, ...]:
    """Each model version an agent reports, as the inventory keeps it."""
    return tuple(
        ModelObs(
            name=m.name,
            version=m.version,
            state=model_state(m.state),
            reason=m.reason,
            sha256=m.sha256,
            queue_depth=m.queue_depth,
            request_rate=m.request_rate,
            p99_ms=m.latency.p99_ms,
            capacity_fps=m.capacity_fps,
            compute_seconds=m.compute_seconds,
            energy_joules=m.energy_joules,
            inference_count=m.inference_count,
            request_success=m.request_success,
            request_failure=m.request_failure,
            adapters=tuple(m.adapters),
            resident_adapters=tuple(m.resident_adapters),
            adapter_slots=m.adapter_slots,
            adapter_requests=tuple(sorted(m.adapter_requests.items())),
        )
        for m in status.models
    )


def node_report(status: control_pb2.NodeStatusResponse) -> NodeReport:
    """One NodeStatus reply as a probe result (NaN sensor readings: not reported)."""
    return NodeReport(
        accelerator=status.accelerator,
        device_id=status.device_id,
        models=model_observations(status),
        temperature_c=_finite(status.temperature_c),
        watts=_finite(status.watts),
        backend=status.backend,
        backend_error=status.backend_error,
        routing_generation=status.routing_generation,
    )


# --- agent control: loads and routes out ----------------------------------------------------


def load_request(load: ReplicaLoad, public_key: str) -> control_pb2.LoadModelRequest:
    """The LoadModel call for a planned load (``public_key``: the resolved verification key)."""
    return control_pb2.LoadModelRequest(
        name=load.model,
        version=load.version,
        uri=load.artifact.uri,
        sha256=load.artifact.sha256,
        signature=load.signature,
        public_key=public_key,
        format=load.artifact.format,
        cache_ttl_seconds=load.cache_ttl_seconds,
        adapters=[
            control_pb2.AdapterArtifact(name=a.name, uri=a.uri, sha256=a.sha256)
            for a in load.adapters
        ],
    )


def routing_table(
    pool: InferencePool,
    routes: Sequence[Route],
    generation: int,
    members: Mapping[str, str] | None = None,
) -> control_pb2.RoutingTable:
    """The table every agent of the pool gets: peers per model version, weights, fallback.

    `members` (node -> address) announces the pool's agents; every endpoint is one of them
    (the agents refuse a table whose endpoint is not), so the routes' nodes are added.
    """
    spec = pool.spec
    table = control_pb2.RoutingTable(
        generation=generation,
        queue_limit=spec.routing.queue_limit,
        retries=spec.routing.retries,
        timeout_ms=spec.routing.timeout_ms,
        policy=spec.routing.policy,
        hedge_after_percentile=spec.routing.hedge_after_percentile or 0.0,
    )
    for r in routes:
        table.routes.append(
            control_pb2.Route(
                model=r.model,
                version=r.version,
                cache_ttl_seconds=r.cache_ttl_seconds,
                cloud_fallback=r.cloud_fallback,
                weight=r.weight,
                endpoints=[
                    control_pb2.Endpoint(
                        node=e.node,
                        address=e.address,
                        weight=e.weight,
                        adapters=e.adapters,
                        adapter_slots_free=e.adapter_slots_free,
                        adapters_known=e.adapters_known,
                    )
                    for e in r.endpoints
                ],
                escalation_output=r.escalation_output,
                escalation_threshold=r.escalation_threshold,
                escalation_model=r.escalation_model,
                escalation_cloud=r.escalation_cloud,
            )
        )
    if spec.cloud_fallback is not None:
        cf = spec.cloud_fallback
        table.cloud.CopyFrom(
            control_pb2.CloudFallback(
                endpoint=cf.endpoint,
                token_name=CLOUD_TOKEN_NAME if cf.token_secret_ref else "",
                max_share=cf.max_share,
                price_per_1k_usd=cf.price_per1k_usd,
                tls=cf.tls,
            )
        )
    announced = dict(members or {})
    for r in routes:
        for e in r.endpoints:
            announced.setdefault(e.node, e.address)
    table.members.extend(
        control_pb2.PoolMember(node=node, address=address)
        for node, address in sorted(announced.items())
        if address
    )
    return table


# --- OIP: the validation gate's requests and responses ---------------------------------------


def encode_tensor(t: vg.WireTensor) -> tuple[dict[str, Any], bytes]:
    """(the input's name/datatype/shape, its raw little-endian bytes)."""
    arr = t.array
    if t.datatype == "BF16":
        # A client holds BF16 as float32; on the wire it is the upper 16 bits of each value.
        bits = np.ascontiguousarray(arr, dtype="<f4").view("<u4") >> 16
        raw = bits.astype("<u2").tobytes()
    else:
        raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}, raw


def infer_request(
    model: str, version: str, request_id: str, tensors: Sequence[vg.WireTensor]
) -> pb.ModelInferRequest:
    """An OIP ModelInfer request for ``model@version`` with raw little-endian inputs."""
    from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb

    req = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for t in tensors:
        spec, raw = encode_tensor(t)
        req.inputs.add(**spec)
        req.raw_input_contents.append(raw)
    return req


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
