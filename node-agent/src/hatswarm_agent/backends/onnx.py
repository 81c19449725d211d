"""onnxruntime on the CPU: the reference backend, and the engine under the simulated NPU.

The model describes itself: inputs and outputs come from the session, ONNX element types map
to OIP datatypes, and a symbolic first dimension shared by every input and output marks a
dynamic batch the micro-batcher may fill. onnxruntime releases the GIL in `run`, so the agent's
worker threads run sessions in parallel.

Threads: under load, `workers` runs of `intra_op_threads` (1) each use the cores best (one
request per core, no thread synchronisation). The default is one worker more than the cores: a
worker that has finished waits for the event loop to hand it the next request, and with only as
many workers as cores its core idles meanwhile (measured here at 8 clients: two workers kept
1.90 of the 2 cores busy, three 1.96). Capacity still counts the cores, not the workers.

A request that arrives alone would leave cores idle that way. So a model whose batch-1 run
takes over WIDE_MIN_S may get a second session with `idle_intra_op_threads` (default: every
core) that the queue uses when nothing else is waiting or running (`run_alone`): measured
here, the CNN's batch-1 run is 15 ms on one thread and 8.5 ms on two. It holds a second copy of
the weights (~17 MB for MobileNet v1 with the shared arena), so with `sessions=auto` it goes
once timing both while the queue is idle has shown it less than WIDE_GAIN faster DROP_AFTER
times in a row (`sessions=one` never makes it, `sessions=two` always keeps it);
`idle_intra_op_threads=0` turns it off too.

Memory (memory.py): every session allocates from one shared arena (`arena=shared`, the
default; `session` gives each its own, `off` none), freed heap goes back to the system after
each load, and after a burst the idle queue asks `maintain` to shrink the arena back to what
a lone request needs. What each session costs is measured at load (`memory_bytes`).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from hatswarm_agent.backends import memory
from hatswarm_agent.backends.base import Array, BackendError, DeviceInfo, LoadedModel, TensorSpec
from hatswarm_agent.backends.options import bool_option, int_option
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
CORES = os.cpu_count() or 1
# One more than the cores: a run ready for the core a worker leaves while the loop refills it.
DEFAULT_WORKERS = CORES + 1
# Models faster than this per run gain nothing from more threads (synchronising them costs more).
WIDE_MIN_S = 0.001
# A second (wide) session must make a lone request at least this much faster to be kept.
WIDE_GAIN = 0.15
TIMING_RUNS = 5  # per session, interleaved, when timing the two at load or when idle
DROP_AFTER = 3  # idle-time timings in a row without a gain before the wide session goes
ARENAS = ("shared", "session", "off")
SESSIONS = ("auto", "one", "two")


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
    # Spinning intra-op threads collapse when another process takes a core (MobileNet v1 on
    # two threads here: 6.6 ms idle, 36 ms beside one busy process; 11.4 ms without spinning,
    # as fast as one thread); without spinning a quiet run costs ~5% more.
    spin = bool_option(options, "spinning", False)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    arena = options.get("arena", "shared")
    if arena not in ARENAS:
        raise BackendError(f"option arena={arena!r}: expected one of {list(ARENAS)}")
    if arena == "off":
        so.enable_cpu_mem_arena = False
    elif arena == "shared" and memory.shared_arena():
        so.add_session_config_entry("session.use_env_allocators", "1")
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
        self.concurrency = int_option(options, "workers", DEFAULT_WORKERS, minimum=1)
        self._capacity = 0.0
        self.latency_s = 0.0  # measured batch-1 run time at load; 0 when unknown
        # The binding under InferenceSession.run: the wrapper's checks (input names, OrtValue
        # ownership, graph capture, EP fallback) do not apply to validated numpy feeds on the
        # CPU provider, and an explicit RunOptions spares one per call: 11 -> 7 us a run.
        self._run = getattr(session, "_sess", session).run
        self._run_options = ort.RunOptions()
        self._run_wide = self._run  # a session with more threads for lone requests, if any
        self._wide: ort.InferenceSession | None = None
        self.runs_alone = False  # until a wide session is added
        self.alone_times = (0.0, 0.0)  # (narrow, wide) seconds for a batch-1 run
        self.memory_bytes: dict[str, int] = {}  # resident bytes each session added at load
        self.sessions = options.get("sessions", "auto")
        self.unpaid = 0  # idle-time timings in a row in which the wide session did not pay
        # Shrinks the arena at the end of the run that carries it (after a burst, when idle).
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

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
        self.runs_alone = True

    def drop_wide_session(self) -> None:
        self._wide, self._run_wide = None, self._run
        self.runs_alone = False
        self.alone_times = (self.alone_times[0], 0.0)

    def time_ways(self, runs: int = TIMING_RUNS, best: bool = False) -> tuple[float, float]:
        """Median (`best`: fastest) batch-1 seconds of the narrow and the wide session on
        zeros, interleaved so that a change in the node's load hits both alike; (narrow, 0.0)
        without a wide one."""
        feeds = self._zero_feeds()
        narrow: list[float] = []
        wide: list[float] = []
        try:
            for _ in range(runs):
                for run, times in ((self._run, narrow), (self._run_wide, wide)):
                    if times is wide and self._wide is None:
                        continue
                    start = time.perf_counter()
                    run(self._output_names, feeds, self._run_options)
                    times.append(time.perf_counter() - start)
        except Exception as exc:
            raise BackendError(f"onnxruntime: {exc}") from exc
        pick = min if best else statistics.median
        return pick(narrow), pick(wide) if wide else 0.0

    def wide_pays(self) -> bool:
        """Whether the wide session made a lone run at least WIDE_GAIN faster just now, by the
        fastest of interleaved runs: what each can do when the node lets it."""
        narrow_s, wide_s = self.time_ways(runs=2 * TIMING_RUNS, best=True)
        return 0 < wide_s <= narrow_s * (1 - WIDE_GAIN)

    maintains = True

    def maintain(self, reclaim: bool, retime: bool) -> tuple[float, float] | None:
        """Idle-time upkeep: give back what a burst took; re-time the two ways, and with
        `sessions=auto` let the wide session go once it has not paid DROP_AFTER times running
        (a node whose cores are always busy has no use for it, one busy only at load has)."""
        if reclaim:
            feeds = self._zero_feeds()
            try:
                for run in {id(r): r for r in (self._run, self._run_wide)}.values():
                    run(self._output_names, feeds, self._shrink)  # frees the arena's free chunks
                    run(self._output_names, feeds, self._run_options)  # batch 1 warm again
            except Exception as exc:
                log.info("arena shrink failed: %s", exc)
            memory.trim()
        if not retime or self._wide is None:
            return None
        self.alone_times = self.time_ways()
        if self.sessions == "auto":
            self.unpaid = 0 if self.wide_pays() else self.unpaid + 1
            if self.unpaid >= DROP_AFTER:
                log.info(
                    "dropping the wide session: no faster than one thread %d times", self.unpaid
                )
                self.drop_wide_session()
                self.memory_bytes.pop("wide", None)
                memory.trim()
        return self.alone_times

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
        # Runs at once beyond the cores share them: they add no capacity.
        self._capacity = min(self.concurrency, CORES) / max(elapsed, 1e-6)

    def capacity_fps(self) -> float:
        return self._capacity

    def close(self) -> None:
        del self._session
        self._wide = None
        self._run = self._run_wide = _closed  # the bound methods held the sessions
        memory.trim()


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
        sessions = options.get("sessions", "auto")
        if sessions not in SESSIONS:
            raise BackendError(f"option sessions={sessions!r}: expected one of {list(SESSIONS)}")
        before = memory.rss_bytes()
        model = OnnxModel(open_session(path, options), options)
        model.warm_up()
        memory.trim()  # the parse and graph optimisation leave freed buffers in the heap
        after = memory.rss_bytes()
        model.memory_bytes["narrow"] = max(0, after - before)
        narrow = int_option(options, "intra_op_threads", 1)
        wide = int_option(options, "idle_intra_op_threads", CORES)
        if sessions != "one" and 1 <= narrow < wide and model.latency_s > WIDE_MIN_S:
            try:
                model.add_wide_session(
                    open_session(path, {**options, "intra_op_threads": str(wide)})
                )
            except BackendError as exc:
                log.info("no %d-thread session for lone requests: %s", wide, exc)
            else:
                self._keep_or_drop_wide(model, sessions, path)
            memory.trim()
            model.memory_bytes["wide"] = max(0, memory.rss_bytes() - after)
            if model._wide is None:
                model.memory_bytes.pop("wide")
        return model

    @staticmethod
    def _keep_or_drop_wide(model: OnnxModel, sessions: str, path: Path) -> None:
        """Time both ways for the lone-request chooser. A wide session that does not pay at
        load is kept for now (the load may have happened beside other work) but counts one
        against it; the idle-time re-timing (`maintain`) decides from there."""
        model.alone_times = model.time_ways()
        if sessions == "auto" and not model.wide_pays():
            model.unpaid = 1
            log.info("%s: the wide session did not pay at load; re-timed when idle", path.name)

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(accelerator="cpu")

    def close(self) -> None:
        pass
