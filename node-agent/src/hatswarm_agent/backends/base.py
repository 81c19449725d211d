"""The one small interface every backend implements.

The data plane, the batcher and the metrics only ever see these types, so onnxruntime, the
Hailo NPU and the simulated NPU are interchangeable. `LoadedModel.run` is blocking and is
called from a worker thread (or, for a model that declares a tiny `latency_s`, inline).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.generic]


class BackendError(Exception):
    """A model could not be loaded or run by this backend; the message is shown to users."""


class BackendUnavailableError(BackendError):
    """The backend cannot exist on this node (e.g. `hailo_platform` is not installed)."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the Open Inference Protocol describes it."""

    name: str
    datatype: str  # OIP datatype: "FP32", "UINT8", "INT64", "FP16", "BYTES", ...
    shape: tuple[int, ...]  # -1 marks a variable dimension
    # An input a request may leave out (Triton's `optional` in the model config), as the
    # sampling parameters of a generative model.
    optional: bool = False


@dataclass(frozen=True)
class DeviceInfo:
    """What the node's accelerator says about itself; None where it cannot be read."""

    accelerator: str  # "hailo8l", "hailo8", "hailo10h" or "cpu"
    device_id: str = ""
    temperature_c: float | None = None
    watts: float | None = None


@dataclass
class ModelProfile:
    """Throughput and latency the accelerator sustains for one model (batch 1 and batch 8)."""

    fps_batch1: float
    fps_batch8: float
    latency_ms_batch1: float = field(default=0.0)


class LoadedModel(abc.ABC):
    """A model ready to run on one backend, and what it can do: backends subclass this.

    The class attributes are the capabilities the agent plans around; a backend overrides the
    ones it has (set on the class or the instance).
    """

    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    # Largest batch the first dimension may carry when it is dynamic; 0 when it is not.
    max_batch_size: int = 0
    # Worker threads that may call `run` at once (a device that runs one batch at a time: 1).
    concurrency: int = 1
    # Measured batch-1 run time, 0.0 when unknown; a short one runs on the event loop.
    latency_s: float = 0.0
    # Watts drawn while computing, for energy accounting; None when the backend cannot tell.
    active_watts: float | None = None
    # Whether `run_alone` is another way to run (more cores) worth timing against `run`.
    runs_alone: bool = False
    # Batch-1 seconds of `run` and `run_alone` as timed at load (0.0: not timed).
    alone_times: tuple[float, float] = (0.0, 0.0)
    # Whether `maintain` does anything (the queue then calls it when idle).
    maintains: bool = False
    # Resident bytes each of the model's sessions added when it loaded, by session name.
    memory_bytes: dict[str, int] = {}  # replaced per instance; this shared one stays empty

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Run one (possibly batched) inference. Blocking; called from a worker thread."""

    def run_alone(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """`run` for a request with the device to itself (only called when `runs_alone`)."""
        return self.run(inputs)

    def maintain(self, reclaim: bool, retime: bool) -> tuple[float, float] | None:
        """Idle-time upkeep, from a worker thread while nothing runs: give back memory a burst
        took (`reclaim`); re-time `run` and `run_alone` on zeros (`retime`): their seconds."""
        return None

    @abc.abstractmethod
    def capacity_fps(self) -> float:
        """Inferences per second this node sustains for this model (measured or profiled)."""

    @abc.abstractmethod
    def close(self) -> None: ...


@runtime_checkable
class AdapterModel(Protocol):
    """A LoadedModel that can run LoRA adapters over its base weights (optional capability).

    An adapter file overrides some of the base model's parameters for one run; the agent keeps
    the bookkeeping (which adapters a model knows, which are resident: adapters.py) and asks the
    backend only to load a file and to run with a loaded adapter. Both are blocking.
    """

    def load_adapter(self, path: Path) -> object:
        """Check an adapter file against this model and load it; BackendError if it does not fit."""
        ...

    def run_adapter(self, inputs: Mapping[str, Array], adapter: object) -> dict[str, Array]:
        """`run` with the parameters of an adapter `load_adapter` returned."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Loads model files for one kind of accelerator and reports the device's health."""

    name: str  # "onnxruntime", "hailo", "simulated", ... (never "auto": that is a choice)

    def load(self, path: Path, options: Mapping[str, str]) -> LoadedModel: ...

    def device_info(self) -> DeviceInfo: ...

    def close(self) -> None: ...
