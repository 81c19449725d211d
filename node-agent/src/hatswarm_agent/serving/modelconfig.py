"""Triton's model configuration and repository index, as this agent's registry describes them.

perf_analyzer, model_analyzer and tritonclient's `get_model_config` read the batch limit,
tensor dims and batching settings from `ModelConfig` before they send a request; the answer
comes from the loaded model's own metadata and its queue, never from a file, so it is what the
agent actually does.
"""

from __future__ import annotations

from types import MappingProxyType

from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import model_config_pb2 as mc
from hatswarm_agent.serving.registry import ModelRegistry, ModelVersion, version_key

# OIP datatype -> Triton config data type (BYTES is TYPE_STRING in a config).
DATA_TYPES: MappingProxyType[str, int] = MappingProxyType(
    {
        "BOOL": mc.TYPE_BOOL,
        "UINT8": mc.TYPE_UINT8,
        "UINT16": mc.TYPE_UINT16,
        "UINT32": mc.TYPE_UINT32,
        "UINT64": mc.TYPE_UINT64,
        "INT8": mc.TYPE_INT8,
        "INT16": mc.TYPE_INT16,
        "INT32": mc.TYPE_INT32,
        "INT64": mc.TYPE_INT64,
        "FP16": mc.TYPE_FP16,
        "FP32": mc.TYPE_FP32,
        "FP64": mc.TYPE_FP64,
        "BYTES": mc.TYPE_STRING,
        "BF16": mc.TYPE_BF16,
    }
)

# Triton's model states (its repository index says these words).
STATES: MappingProxyType[int, str] = MappingProxyType(
    {
        control_pb2.MODEL_STATE_LOADING: "LOADING",
        control_pb2.MODEL_STATE_READY: "READY",
        control_pb2.MODEL_STATE_FAILED: "UNAVAILABLE",
        control_pb2.MODEL_STATE_UNLOADING: "UNLOADING",
    }
)

# Backends whose device schedules its own instances (Triton's KIND_MODEL).
_DEVICE_BACKENDS = frozenset({"hailo", "simulated"})


def model_config(entry: ModelVersion, platform: str) -> mc.ModelConfig:
    """The Triton `ModelConfig` of one loaded version.

    With batching on (max_batch_size > 0) the first dimension is the batch and, as in Triton,
    the dims leave it out; requests queued together run as one batch (dynamic batching).
    """
    queue = entry.queue
    max_batch = queue.max_batch_size if queue is not None else 0
    config = mc.ModelConfig(
        name=entry.name, platform=platform, backend=entry.backend, max_batch_size=max_batch
    )
    for spec in entry.inputs:
        dims = spec.shape[1:] if max_batch else spec.shape
        config.input.add(
            name=spec.name,
            data_type=DATA_TYPES.get(spec.datatype, 0),
            dims=dims,
            optional=spec.optional,
        )
    for spec in entry.outputs:
        dims = spec.shape[1:] if max_batch else spec.shape
        config.output.add(name=spec.name, data_type=DATA_TYPES.get(spec.datatype, 0), dims=dims)
    if queue is not None:
        if max_batch:
            batching = config.dynamic_batching
            batching.max_queue_delay_microseconds = round(queue.max_queue_delay_s * 1e6)
            batching.default_queue_policy.max_queue_size = queue.limit
        kind = (
            mc.ModelInstanceGroup.KIND_MODEL
            if entry.backend in _DEVICE_BACKENDS
            else mc.ModelInstanceGroup.KIND_CPU
        )
        config.instance_group.add(name=entry.name, kind=kind, count=queue.concurrency)
    for key, value in sorted(entry.request.options.items()):
        config.parameters[key].string_value = value
    return config


def repository_index(registry: ModelRegistry, ready_only: bool) -> pb.RepositoryIndexResponse:
    """Every version the registry knows, with Triton's state words and the failure reason."""
    response = pb.RepositoryIndexResponse()
    entries = sorted(registry.all(), key=lambda e: (e.name, version_key(e.version)))
    for entry in entries:
        if ready_only and not entry.ready:
            continue
        response.models.add(
            name=entry.name,
            version=entry.version,
            state=STATES.get(entry.state, "UNKNOWN"),
            reason=entry.reason,
        )
    return response
