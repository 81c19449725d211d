"""onnxruntime on the CPU: the reference backend, and the engine under the simulated NPU.

The model describes itself: inputs and outputs come from the session, ONNX element types map
to OIP datatypes, and a symbolic first dimension shared by every input and output marks a
dynamic batch the micro-batcher may fill. onnxruntime releases the GIL in `run`, so the agent's
worker threads run sessions in parallel.

Threads: under load, `workers` runs of `intra_op_threads` (1) each use the cores best (one
request per core, no thread synchronisation); a request that arrives alone would leave cores
idle that way. So a model whose batch-1 run takes over WIDE_MIN_S also gets a second session
with `idle_intra_op_threads` (default: every core) that the queue uses when nothing else is
waiting or running (`run_alone`): measured here, the CNN's batch-1 run is 15 ms on one thread
and 8.5 ms on two. It holds a second copy of the weights; `idle_intra_op_threads=0` turns it off.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from hatswarm_agent.backends.base import Array, BackendError, DeviceInfo, LoadedModel, TensorSpec
from hatswarm_agent.backends.options import int_option
from hatswarm_agent.protocol.datatypes import OIP_TO_NUMPY

log = logging.getLogger(__name__)

ONNX_TO_OIP: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_OPT_LEVELS: dict[str, Any] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

DEFAULT_MAX_BATCH_SIZE = 8
# Models faster than this per run gain nothing from more threads (synchronising them costs more).
WIDE_MIN_S = 0.001


def session_options(options: Mapping[str, str]) -> ort.SessionOptions:
    """Session options from backend options: intra/inter-op threads, graph optimisation."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = int_option(options, "intra_op_threads", 1)
    so.inter_op_num_threads = int_option(options, "inter_op_threads", 1)
    level = options.get("graph_optimization", "all")
    if level not in _OPT_LEVELS:
        raise BackendError(
            f"option graph_optimization={level!r}: expected one of {list(_OPT_LEVELS)}"
        )
    so.graph_optimization_level = _OPT_LEVELS[level]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def describe(args: Sequence[Any], kind: str) -> tuple[list[TensorSpec], list[str]]:
    """TensorSpecs for session inputs/outputs; non-tensor outputs (e.g. ZipMap) are skipped."""
    specs: list[TensorSpec] = []
    skipped: list[str] = []
    for arg in args:
        datatype = ONNX_TO_OIP.get(arg.type)
        if datatype is None:
            if kind == "input":
                raise BackendError(f"input '{arg.name}' has unsupported type {arg.type}")
            skipped.append(arg.name)
            continue
        specs.append(TensorSpec(arg.name, datatype, _dims(arg.shape)))
    return specs, skipped


def has_dynamic_batch(args: Sequence[Any]) -> bool:
    """True when every tensor's first dimension is symbolic (or unknown): a batch axis."""
    return bool(args) and all(
        len(a.shape) >= 1 and not (isinstance(a.shape[0], int) and a.shape[0] > 0) for a in args
    )


class OnnxModel(LoadedModel):
    """One onnxruntime session; `concurrency` worker threads may call `run` at once."""

    runs_alone = True  # a lone request may use the wide session (or the same one)

    def __init__(self, session: ort.InferenceSession, options: Mapping[str, str]) -> None:
        self._session = session
        inputs, _ = describe(session.get_inputs(), "input")
        outputs = list(session.get_outputs())
        tensor_specs, skipped = describe(outputs, "output")
        self.inputs: Sequence[TensorSpec] = inputs
        self.outputs: Sequence[TensorSpec] = tensor_specs
        if skipped:
            log.info("skipping non-tensor outputs %s", skipped)
        if not self.outputs:
            raise BackendError("model has no tensor outputs")
        self._output_names = [o.name for o in self.outputs]
        tensor_outputs = [o for o in outputs if o.name in self._output_names]
        batchable = has_dynamic_batch(list(session.get_inputs()) + tensor_outputs)
        max_batch = int_option(options, "max_batch_size", DEFAULT_MAX_BATCH_SIZE)
        self.max_batch_size = max_batch if batchable and max_batch > 1 else 0
        self.concurrency = int_option(options, "workers", os.cpu_count() or 1, minimum=1)
        self._capacity = 0.0
        self.latency_s = 0.0  # measured batch-1 run time at load; 0 when unknown
        # The binding under InferenceSession.run: the wrapper's checks (input names, OrtValue
        # ownership, graph capture, EP fallback) do not apply to validated numpy feeds on the
        # CPU provider, and an explicit RunOptions spares one per call: 11 -> 7 us a run.
        self._run = getattr(session, "_sess", session).run
        self._run_options = ort.RunOptions()
        self._run_wide = self._run  # a session with more threads for lone requests, if any
        self._wide: ort.InferenceSession | None = None

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        feeds = inputs if type(inputs) is dict else dict(inputs)
        try:
            results = self._run(self._output_names, feeds, self._run_options)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendError(f"onnxruntime: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def run_alone(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """`run` for a request with the cores to itself (the queue has nothing else)."""
        feeds = inputs if type(inputs) is dict else dict(inputs)
        try:
            results = self._run_wide(self._output_names, feeds, self._run_options)
        except Exception as exc:
            raise BackendError(f"onnxruntime: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def add_wide_session(self, session: ort.InferenceSession) -> None:
        """Use `session` (same model, more intra-op threads) for `run_alone` once warmed up."""
        run = getattr(session, "_sess", session).run
        feeds = self._zero_feeds()
        try:
            for _ in range(2):
                run(self._output_names, feeds, self._run_options)
        except Exception as exc:
            raise BackendError(f"onnxruntime: {exc}") from exc
        self._wide, self._run_wide = session, run

    def load_adapter(self, path: Path) -> ort.LoraAdapter:
        """A LoRA adapter file (onnxruntime's adapter format) checked against this model.

        Every parameter must name one of the model's overridable initializers (graph inputs
        with a default) with the same element type and shape, so a wrong adapter is refused
        here with a clear reason instead of failing each request later.
        """
        try:
            params = ort.AdapterFormat.read_adapter(str(path)).get_parameters()
        except Exception as exc:
            raise BackendError(f"not an onnxruntime adapter file: {exc}") from exc
        if not params:
            raise BackendError("adapter has no parameters")
        overridable = {a.name: a for a in self._session.get_overridable_initializers()}
        for name, value in sorted(params.items()):
            target = overridable.get(name)
            if target is None:
                raise BackendError(
                    f"adapter parameter '{name}' is not an overridable initializer of the "
                    f"model (has {sorted(overridable) or 'none'})"
                )
            shape, expected = list(value.shape()), _dims(target.shape)
            if (
                value.data_type() != target.type
                or len(shape) != len(expected)
                or any(e >= 0 and d != e for d, e in zip(shape, expected, strict=True))
            ):
                raise BackendError(
                    f"adapter parameter '{name}' is {value.data_type()} {shape}, the model "
                    f"expects {target.type} {list(expected)}"
                )
        adapter = ort.LoraAdapter()
        try:
            adapter.Load(str(path))
        except Exception as exc:
            raise BackendError(f"cannot load adapter: {exc}") from exc
        return adapter

    def run_adapter(self, inputs: Mapping[str, Array], adapter: object) -> dict[str, Array]:
        run_options = ort.RunOptions()
        run_options.add_active_adapter(adapter)
        try:
            results = self._session.run(self._output_names, dict(inputs), run_options)
        except Exception as exc:
            raise BackendError(f"onnxruntime: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def _zero_feeds(self) -> dict[str, Array]:
        feeds: dict[str, Array] = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            if spec.datatype == "BYTES":
                feeds[spec.name] = np.full(shape, "", dtype=np.object_)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=OIP_TO_NUMPY[spec.datatype])
        return feeds

    def warm_up(self) -> None:
        """Run once on zeros (first runs allocate) and derive capacity from a timed second run."""
        feeds = self._zero_feeds()
        try:
            self.run(feeds)
            start = time.perf_counter()
            self.run(feeds)
            elapsed = time.perf_counter() - start
        except BackendError as exc:
            log.info("warm-up on zeros failed (capacity unknown): %s", exc)
            return
        self.latency_s = elapsed
        self._capacity = self.concurrency / max(elapsed, 1e-6)

    def capacity_fps(self) -> float:
        return self._capacity

    def close(self) -> None:
        del self._session
        self._wide = None
        self._run = self._run_wide = _closed  # the bound methods held the sessions


def _closed(*_: object) -> list[Array]:
    raise BackendError("model is closed")


def open_session(path: Path, options: Mapping[str, str]) -> ort.InferenceSession:
    """An onnxruntime CPU session for `path`, with load errors as BackendError."""
    try:
        return ort.InferenceSession(
            str(path), session_options(options), providers=["CPUExecutionProvider"]
        )
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"cannot load ONNX model {path.name}: {exc}") from exc


class OnnxBackend:
    """onnxruntime on the CPU; the node reports itself as a plain CPU."""

    name = "onnxruntime"

    def load(self, path: Path, options: Mapping[str, str]) -> OnnxModel:
        model = OnnxModel(open_session(path, options), options)
        model.warm_up()
        narrow = int_option(options, "intra_op_threads", 1)
        wide = int_option(options, "idle_intra_op_threads", os.cpu_count() or 1)
        if 1 <= narrow < wide and model.latency_s > WIDE_MIN_S:
            try:
                model.add_wide_session(
                    open_session(path, {**options, "intra_op_threads": str(wide)})
                )
            except BackendError as exc:
                log.info("no %d-thread session for lone requests: %s", wide, exc)
        return model

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(accelerator="cpu")

    def close(self) -> None:
        pass
