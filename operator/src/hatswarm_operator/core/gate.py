"""The validation gate's verdict: does a new version answer the spec's samples well enough?

A new ``spec.version`` is loaded on one node and sent the gate's samples before it takes any
traffic (see :mod:`hatswarm_operator.core.rollout`). This module is the pure half of that: it turns
a sample's inputs into the arrays a client sends (:func:`input_tensors`) and compares what came
back with what was expected (:func:`evaluate`). The control runtime (`control.gate_runner`) does the gRPC calls and times
them; nothing here does I/O or reads a clock.

Values compare with numpy ``allclose`` semantics, element-wise
``|actual - expected| <= atol + rtol * |expected|``, NaN never equal. Shapes must match exactly
when the output is an array; a flat list is checked for its length only. Every failure is a
message precise enough to act on from ``kubectl describe``: which sample, which output, which
element, both values and the tolerance that was exceeded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
from hatswarm_agent.protocol.datatypes import OIP_TO_NUMPY

if TYPE_CHECKING:
    from hatswarm_operator.api.edgemodel import SampleTensor, ValidationGate

NP_DTYPES: Mapping[str, np.dtype[Any]] = MappingProxyType(
    # numpy has no bfloat16: OIP clients (tritonclient) hold BF16 tensors as float32.
    {**{k: v for k, v in OIP_TO_NUMPY.items() if k != "BYTES"}, "BF16": np.dtype(np.float32)}
)
"""OIP datatype -> the numpy dtype a client holds it in. BYTES is absent: samples are numbers."""

_OIP_BY_DTYPE: Mapping[np.dtype[Any], str] = MappingProxyType(
    {dt: name for name, dt in NP_DTYPES.items() if name != "BF16"}
)

Output: TypeAlias = npt.NDArray[Any] | Sequence[float]
"""An output as returned: an array (shape and dtype are checked) or a flat list of values."""


@dataclass(frozen=True, slots=True)
class Tensor:
    """A sample tensor as in the spec: OIP datatype, shape and the values flattened row-major."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One request of the gate and the outputs it must produce."""

    inputs: tuple[Tensor, ...]
    expected: tuple[Tensor, ...]


@dataclass(frozen=True, slots=True)
class Gate:
    """The gate's samples and limits (``spec.validation``)."""

    samples: tuple[Sample, ...]
    absolute_tolerance: float = 1e-3
    relative_tolerance: float = 1e-3
    max_latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class SampleRun:
    """What one sample's inference call gave: outputs by name and its latency.

    ``error`` is set when the call itself failed (the message of the gRPC error); the outputs
    are then ignored. Time a warm call: the first inference on a freshly loaded HEF is slower.
    """

    outputs: Mapping[str, Output]
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class GateResult:
    """The verdict: ``message`` is one line for an Event or ``status.canary.message``."""

    passed: bool
    message: str
    failures: tuple[str, ...] = ()


class WireTensor(NamedTuple):
    """An input as a client sends it (``tritonclient.grpc.InferInput(name, shape, datatype)``
    then ``set_data_from_numpy(array)``)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: npt.NDArray[Any]


def tensor_from_spec(t: SampleTensor) -> Tensor:
    """Adapt an API ``SampleTensor``."""
    return Tensor(t.name, t.datatype, tuple(t.shape), tuple(t.data))


def gate_from_spec(v: ValidationGate) -> Gate:
    """Adapt the API ``spec.validation`` into the plain data :func:`evaluate` takes."""
    return Gate(
        samples=tuple(
            Sample(
                inputs=tuple(tensor_from_spec(t) for t in s.inputs),
                expected=tuple(tensor_from_spec(t) for t in s.expected),
            )
            for s in v.samples
        ),
        absolute_tolerance=v.absolute_tolerance,
        relative_tolerance=v.relative_tolerance,
        max_latency_ms=v.max_latency_ms,
    )


def tensor_array(t: Tensor, role: str = "input") -> npt.NDArray[Any]:
    """The tensor as a numpy array of its datatype and shape.

    Raises ``ValueError`` when the data cannot be that tensor: wrong count for the shape, an
    unsupported datatype (BYTES), a fractional or out-of-range value for an integer type.
    """
    dtype = NP_DTYPES.get(t.datatype)
    if dtype is None:
        raise ValueError(f"{role} '{t.name}': datatype {t.datatype} is not supported in samples")
    count = math.prod(t.shape)
    if count != len(t.data):
        raise ValueError(
            f"{role} '{t.name}': shape {_shape(t.shape)} holds {count} values, "
            f"data has {len(t.data)}"
        )
    raw = np.asarray(t.data, dtype=np.float64)
    if dtype.kind in "biu":
        bad = _first_unrepresentable(raw, dtype)
        if bad is not None:
            raise ValueError(
                f"{role} '{t.name}'[{_index(bad, t.shape)}]: {raw[bad]:g} does not fit {t.datatype}"
            )
    return raw.astype(dtype).reshape(t.shape)


def input_tensors(sample: Sample) -> list[WireTensor]:
    """The sample's inputs as (name, datatype, shape, array), in the spec's order."""
    return [WireTensor(t.name, t.datatype, t.shape, tensor_array(t)) for t in sample.inputs]


def compare_sample(
    sample: Sample,
    run: SampleRun,
    *,
    atol: float,
    rtol: float,
    max_latency_ms: float | None = None,
) -> list[str]:
    """Every way ``run`` falls short of ``sample`` (empty when it passes)."""
    if run.error is not None:
        return [f"inference failed: {run.error}"]
    failures: list[str] = []
    for expected in sample.expected:
        failure = _compare_output(expected, run.outputs, atol, rtol)
        if failure is not None:
            failures.append(failure)
    if max_latency_ms is not None and not run.latency_ms <= max_latency_ms:
        failures.append(f"latency {run.latency_ms:.0f} ms > limit {max_latency_ms:g} ms")
    return failures


def evaluate(gate: Gate, runs: Sequence[SampleRun]) -> GateResult:
    """The gate's verdict over all samples; ``runs[i]`` is the result of ``gate.samples[i]``."""
    if len(runs) != len(gate.samples):
        msg = f"{len(gate.samples)} samples but {len(runs)} results"
        return GateResult(False, msg, (msg,))
    many = len(gate.samples) > 1
    failures: list[str] = []
    for i, (sample, run) in enumerate(zip(gate.samples, runs, strict=True)):
        for failure in compare_sample(
            sample,
            run,
            atol=gate.absolute_tolerance,
            rtol=gate.relative_tolerance,
            max_latency_ms=gate.max_latency_ms,
        ):
            failures.append(f"sample {i}: {failure}" if many else failure)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return GateResult(False, failures[0] + more, tuple(failures))
    worst = max(r.latency_ms for r in runs)
    plural = "s" if len(runs) != 1 else ""
    return GateResult(
        True,
        f"{len(runs)} sample{plural} within atol {gate.absolute_tolerance:g} + rtol "
        f"{gate.relative_tolerance:g}*|expected|, max latency {worst:.0f} ms",
    )


def _compare_output(
    expected: Tensor, outputs: Mapping[str, Output], atol: float, rtol: float
) -> str | None:
    name = expected.name
    if name not in outputs:
        return f"missing output '{name}'"
    count = math.prod(expected.shape)
    if count != len(expected.data):
        return (
            f"expected '{name}': shape {_shape(expected.shape)} holds {count} values, "
            f"data has {len(expected.data)}"
        )
    got = outputs[name]
    if isinstance(got, np.ndarray):
        if tuple(got.shape) != expected.shape:
            return f"output '{name}' shape {_shape(got.shape)} vs expected {_shape(expected.shape)}"
        datatype = _OIP_BY_DTYPE.get(got.dtype)
        if datatype is None:
            return f"output '{name}' is not numeric (dtype {got.dtype})"
        if datatype != expected.datatype and not (
            expected.datatype == "BF16" and datatype == "FP32"
        ):
            return f"output '{name}' datatype {datatype} vs expected {expected.datatype}"
        actual = got.astype(np.float64).ravel()
    else:
        try:
            actual = np.asarray(got, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            return f"output '{name}' is not a list of numbers"
        if actual.size != count:
            return (
                f"output '{name}' has {actual.size} values vs expected {count} "
                f"(shape {_shape(expected.shape)})"
            )
    want = np.asarray(expected.data, dtype=np.float64)
    close = np.isclose(actual, want, rtol=rtol, atol=atol, equal_nan=False)
    if bool(close.all()):
        return None
    excess = np.abs(actual - want) - (atol + rtol * np.abs(want))
    excess = np.where(np.isnan(excess), np.inf, excess)
    excess = np.where(close, -np.inf, excess)
    worst = int(np.argmax(excess))
    wrong = int((~close).sum())
    tail = f" ({wrong} of {count} values differ)" if wrong > 1 else ""
    return (
        f"output {name}[{_index(worst, expected.shape)}]: {actual[worst]:.6g} vs expected "
        f"{want[worst]:.6g} beyond atol {atol:g} + rtol {rtol:g}*|expected|{tail}"
    )


def _first_unrepresentable(raw: npt.NDArray[np.float64], dtype: np.dtype[Any]) -> int | None:
    if dtype.kind == "b":
        ok = (raw == 0) | (raw == 1)
    else:
        info = np.iinfo(dtype)
        ok = np.isfinite(raw) & (raw == np.round(raw)) & (raw >= info.min) & (raw <= info.max)
    if bool(ok.all()):
        return None
    return int(np.argmin(ok))


def _shape(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _index(flat: int, shape: Sequence[int]) -> str:
    """A flat index as the element's position: ``1`` for a vector, ``0,1`` for a matrix."""
    if len(shape) <= 1:
        return str(flat)
    return ",".join(str(int(i)) for i in np.unravel_index(flat, tuple(shape)))
