"""Hailo-8 / Hailo-8L / Hailo-10H NPU backend: HEF models through HailoRT's InferModel API.

HailoRT's Python binding (`hailo_platform`, 4.18+) is not on PyPI: it comes from Hailo's apt
packages on Raspberry Pi OS, so it is imported lazily and its absence is a clear
BackendUnavailableError, never an import failure of the agent.

One `VDevice` is opened per agent with the round-robin scheduler, so several models share the
NPU and HailoRT switches between them; with `multi_process_service=True` the VDevice is a client
of `hailort_service` and other processes can use the chip at the same time. Each model is an
`InferModel` configured once; a request of N frames becomes N bindings run together (HEF
inputs are per frame, usually NHWC uint8, and the batch is set on the model, so OIP tensors
carry the batch as a leading -1 dimension here).

A HEF is compiled for one chip. HailoRT itself refuses a Hailo-8 HEF on a Hailo-8L, and runs a
Hailo-8L HEF on a Hailo-8 only at a fraction of its speed, which would make the node's measured
capacity a lie; so when the HEF's target is known (option `hw_arch`, or the `_h8l`/`_h8`/`_h10h`
naming of Hailo's model zoo) and differs from the device, the load is refused with a clear
message.

The chip is what HailoRT says it is (`Control.identify().device_architecture`: HAILO8L on the
13 TOPS AI HAT+, HAILO8 or HAILO8_A0 on the 26 TOPS one, HAILO10H on the AI HAT+ 2), never a
label: the agent reports it in NodeStatus and the operator places HEFs by it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hatswarm_agent.backends.base import (
    Array,
    BackendError,
    BackendUnavailableError,
    DeviceInfo,
    LoadedModel,
    TensorSpec,
)

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "hailo_platform (HailoRT) is not installed: on Raspberry Pi OS run "
    "`sudo apt install hailo-all` and create the venv with --system-site-packages"
)

# HailoRT format type name -> (OIP datatype, numpy dtype).
_FORMATS: dict[str, tuple[str, type[np.generic]]] = {
    "UINT8": ("UINT8", np.uint8),
    "UINT16": ("UINT16", np.uint16),
    "FLOAT32": ("FP32", np.float32),
}
_FORMAT_OPTION = {"uint8": "UINT8", "uint16": "UINT16", "float32": "FLOAT32", "fp32": "FLOAT32"}
_ARCHES = ("hailo8", "hailo8l", "hailo10h")
_ARCH_IN_NAME = re.compile(
    r"(?:^|[^a-z0-9])(hailo10h|h10h|h10|hailo8l|h8l|hailo8|h8)(?=$|[^a-z0-9])"
)
_NAME_TO_ARCH = {
    "hailo10h": "hailo10h",
    "h10h": "hailo10h",
    "h10": "hailo10h",
    "hailo8l": "hailo8l",
    "h8l": "hailo8l",
    "hailo8": "hailo8",
    "h8": "hailo8",
}

NO_ADAPTERS = (
    "hailo: a HEF is compiled with its weights and has no run-time LoRA; merge the adapter "
    "into the model and compile one HEF per variant (load each as its own model version)"
)

DEFAULT_BATCH_SIZE = 8  # Hailo-8L resnet_v1_50: 138 FPS at batch 1, 502 at batch 8
DEFAULT_TIMEOUT_MS = 10_000


def hef_arch_from_name(name: str) -> str | None:
    """The target chip a HEF's path announces (`yolov8s_h8l.hef`, `.../hailo10h/x.hef`), if any.

    Hailo's model zoo and the `hailo-models` package name files and folders this way; the agent
    stores artifacts by digest, so callers pass the original URI or set the `hw_arch` option.
    The file name wins over folders, the nearest folder over farther ones.
    """
    path = urllib.parse.urlsplit(name).path if "://" in name else name
    for part in reversed(path.lower().split("/")):
        match = _ARCH_IN_NAME.search(part)
        if match is not None:
            return _NAME_TO_ARCH[match.group(1)]
    return None


def _arch_of(value: Any) -> str:
    """DeviceArchitectureTypes.HAILO8L -> "hailo8l", HAILO10H -> "hailo10h" (HAILO8_A0 is a
    Hailo-8)."""
    name = str(getattr(value, "name", value)).lower()
    return "hailo8" if name.startswith("hailo8_") else name


def _format_name(stream: Any) -> str:
    fmt_type = stream.format.type
    return str(getattr(fmt_type, "name", fmt_type)).upper()


def _option(options: Mapping[str, str], key: str, default: int) -> int:
    raw = options.get(key, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BackendError(f"option {key} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise BackendError(f"option {key} must be positive, got {value}")
    return value


class HailoModel(LoadedModel):
    """One configured HEF on the shared VDevice."""

    def __init__(
        self,
        backend: HailoBackend,
        infer_model: Any,
        stack: contextlib.ExitStack,
        configured: Any,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        batch_size: int,
        timeout_ms: int,
        declared_fps: float,
    ) -> None:
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.max_batch_size = batch_size
        self._backend = backend
        self._infer_model = infer_model  # keeps the VDevice's model alive while configured
        self._stack = stack
        self._configured = configured
        self._timeout_ms = timeout_ms
        self._declared_fps = declared_fps
        self._measured_fps = 0.0
        self._dtypes = {
            spec.name: np.dtype(_FORMATS[_oip_to_hailo(spec.datatype)][1])
            for spec in [*self.inputs, *self.outputs]
        }
        self._closed = False

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Run N frames as N bindings in one `ConfiguredInferModel.run` call."""
        if self._closed:
            raise BackendError("model is unloaded")
        frames = self._check_inputs(inputs)
        results = {
            spec.name: np.empty((frames, *spec.shape[1:]), dtype=self._dtypes[spec.name])
            for spec in self.outputs
        }
        contiguous = {name: np.ascontiguousarray(inputs[name]) for name in inputs}
        hailo_error = self._backend.hailo_error
        try:
            bindings = []
            for i in range(frames):
                # Row i of a C-contiguous (N, ...) array is contiguous: HailoRT writes in place.
                binding = self._configured.create_bindings(
                    output_buffers={name: buf[i] for name, buf in results.items()}
                )
                for name, arr in contiguous.items():
                    binding.input(name).set_buffer(arr[i])
                bindings.append(binding)
            started = time.perf_counter()
            self._configured.run(bindings, self._timeout_ms)
            elapsed = time.perf_counter() - started
        except hailo_error as exc:
            raise BackendError(f"HailoRT inference failed: {exc}") from exc
        if elapsed > 0:
            self._measured_fps = max(self._measured_fps, frames / elapsed)
        return dict(results)

    def _check_inputs(self, inputs: Mapping[str, Array]) -> int:
        expected = {spec.name for spec in self.inputs}
        if set(inputs) != expected:
            missing = sorted(expected - set(inputs))
            extra = sorted(set(inputs) - expected)
            raise BackendError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}"
            )
        frames = -1
        for spec in self.inputs:
            arr = inputs[spec.name]
            if arr.ndim != len(spec.shape) or tuple(arr.shape[1:]) != spec.shape[1:]:
                raise BackendError(
                    f"input {spec.name}: expected shape {list(spec.shape)}, got {list(arr.shape)}"
                )
            if arr.dtype != self._dtypes[spec.name]:
                raise BackendError(
                    f"input {spec.name}: expected {spec.datatype}, got numpy {arr.dtype}"
                )
            if frames not in (-1, arr.shape[0]):
                raise BackendError("all inputs must carry the same batch size")
            frames = arr.shape[0]
        if frames <= 0:
            raise BackendError("a request must carry at least one frame")
        return frames

    def load_adapter(self, path: Path) -> object:
        raise BackendError(NO_ADAPTERS)

    def run_adapter(self, inputs: Mapping[str, Array], adapter: object) -> dict[str, Array]:
        raise BackendError(NO_ADAPTERS)

    def capacity_fps(self) -> float:
        """Declared FPS, else the compiler's bottleneck FPS of the HEF, else the best measured."""
        return self._declared_fps or self._measured_fps

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Free the NPU's resources now rather than when the objects are collected.
        with contextlib.suppress(self._backend.hailo_error, AttributeError):
            self._configured.shutdown()
        self._stack.close()
        self._configured = self._infer_model = None
        self._backend.forget(self)


def _oip_to_hailo(datatype: str) -> str:
    for hailo_name, (oip, _) in _FORMATS.items():
        if oip == datatype:
            return hailo_name
    raise BackendError(f"unsupported datatype {datatype}")


class HailoBackend:
    """Loads HEFs onto the node's Hailo NPU and reports its identity, temperature and power."""

    name = "hailo"

    def __init__(
        self,
        *,
        multi_process_service: bool = False,
        group_id: str = "SHARED",
        default_batch_size: int = DEFAULT_BATCH_SIZE,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> None:
        """Open the NPU. `multi_process_service` shares it with other processes through
        `hailort_service` (all of them must then use the same `group_id`)."""
        try:
            import hailo_platform  # optional: installed system-wide by apt, never from PyPI
        except ImportError as exc:
            raise BackendUnavailableError(INSTALL_HINT) from exc
        self._hp: Any = hailo_platform
        self.hailo_error: type[Exception] = hailo_platform.HailoRTException
        self._default_batch_size = default_batch_size
        self._timeout_ms = timeout_ms
        self._models: list[HailoModel] = []
        self._lock = threading.Lock()  # HailoRT control calls are not made concurrently

        params = hailo_platform.VDevice.create_params()
        params.scheduling_algorithm = hailo_platform.HailoSchedulingAlgorithm.ROUND_ROBIN
        if multi_process_service:
            params.multi_process_service = True
            params.group_id = group_id
        try:
            self._vdevice: Any = hailo_platform.VDevice(params)
        except self.hailo_error as exc:
            raise BackendUnavailableError(
                f"no usable Hailo device ({exc}): check `hailortcli scan` and that the "
                "hailo_pci driver is loaded"
            ) from exc

        self.device_id = self._physical_device_id()
        self._device: Any = None
        self._power_supported = True
        try:
            board = self._control().identify()
        except self.hailo_error as exc:
            self.close()
            raise BackendUnavailableError(f"cannot identify the Hailo device: {exc}") from exc
        self.accelerator = _arch_of(board.device_architecture)
        serial = str(getattr(board, "serial_number", "") or "").rstrip("\x00").strip()
        self.serial_number = serial
        self.product_name = str(getattr(board, "product_name", "") or "").rstrip("\x00").strip()
        if self.accelerator not in _ARCHES:
            log.warning(
                "HailoRT reports a %s: hatswarm places only %s HEFs", self.accelerator, _ARCHES
            )
        log.info(
            "Hailo NPU %s (%s, %s, serial %s)",
            self.accelerator, self.device_id, self.product_name or "-", serial or "-",
        )  # fmt: skip

    # -- device --------------------------------------------------------------------------

    def _physical_device_id(self) -> str:
        try:
            ids = list(self._vdevice.get_physical_devices_ids())
        except self.hailo_error:  # not offered through hailort_service on some versions
            try:
                ids = list(self._hp.Device.scan())
            except self.hailo_error:
                ids = []
        return str(ids[0]) if ids else ""

    def _control(self) -> Any:
        """The control API of the physical device, opened once and kept."""
        if self._device is None:
            self._device = self._hp.Device(self.device_id) if self.device_id else self._hp.Device()
        return self._device.control

    def device_info(self) -> DeviceInfo:
        """Identity, hottest on-die sensor and (where the board can measure it) power."""
        temperature: float | None = None
        watts: float | None = None
        with self._lock:
            try:
                control = self._control()
                reading = control.get_chip_temperature()
                temperature = float(max(reading.ts0_temperature, reading.ts1_temperature))
            except self.hailo_error as exc:
                log.debug("cannot read the Hailo temperature: %s", exc)
            if self._power_supported:
                try:
                    watts = float(
                        self._control().power_measurement(
                            self._hp.DvmTypes.AUTO, self._hp.PowerMeasurementTypes.POWER
                        )
                    )
                except self.hailo_error as exc:
                    # M.2 boards without current monitoring: stop asking (HailoRT logs errors).
                    log.info("Hailo power measurement unavailable on this board: %s", exc)
                    self._power_supported = False
        if temperature is not None and not math.isfinite(temperature):
            temperature = None
        return DeviceInfo(
            accelerator=self.accelerator,
            device_id=self.serial_number or self.device_id,
            temperature_c=temperature,
            watts=watts,
        )

    # -- models --------------------------------------------------------------------------

    def check_arch(self, path: Path, options: Mapping[str, str]) -> None:
        """Refuse a HEF compiled for another chip, when its target is known."""
        declared = (options.get("hw_arch") or options.get("hef_arch") or "").strip().lower()
        if declared and declared not in _ARCHES:
            raise BackendError(f"option hw_arch must be one of {list(_ARCHES)}, got {declared!r}")
        target = (
            declared or hef_arch_from_name(options.get("uri", "")) or hef_arch_from_name(path.name)
        )
        if target is None or target == self.accelerator:
            return
        if (
            target == "hailo8l"
            and self.accelerator == "hailo8"
            and options.get("allow_hailo8l_on_hailo8", "").lower() == "true"
        ):
            log.warning("running a Hailo-8L HEF on a Hailo-8: expect a fraction of its speed")
            return
        raise BackendError(
            f"HEF {path.name} is compiled for {target} but this node's NPU is a "
            f"{self.accelerator}: compile it with `--hw-arch {self.accelerator}` "
            "or place it on a matching node"
        )

    def load(self, path: Path, options: Mapping[str, str]) -> HailoModel:
        """Create, shape and configure an InferModel for one HEF.

        Options: max_batch_size, timeout_ms, input_format / output_format (auto, uint8,
        uint16, float32; outputs default to float32 so clients get dequantized values),
        hw_arch, uri (the artifact's original URI, for its name), capacity_fps.
        """
        self.check_arch(path, options)
        batch_size = _option(options, "max_batch_size", self._default_batch_size)
        timeout_ms = _option(options, "timeout_ms", self._timeout_ms)
        input_format = self._format_type(options.get("input_format", "auto"))
        output_format = self._format_type(options.get("output_format", "float32"))

        stack = contextlib.ExitStack()
        try:
            infer_model = self._vdevice.create_infer_model(str(path))
            infer_model.set_batch_size(batch_size)
            for stream in infer_model.inputs:
                if input_format is not None:
                    stream.set_format_type(input_format)
            for stream in infer_model.outputs:
                if output_format is not None:
                    stream.set_format_type(output_format)
            inputs = [self._spec(stream) for stream in infer_model.inputs]
            outputs = [self._spec(stream) for stream in infer_model.outputs]
            configured = stack.enter_context(infer_model.configure())
            declared_fps = float(options.get("capacity_fps", "0") or 0) or self._bottleneck_fps(
                infer_model
            )
        except self.hailo_error as exc:
            stack.close()
            raise BackendError(f"HailoRT cannot load {path.name}: {exc}") from exc
        except BaseException:
            stack.close()
            raise
        model = HailoModel(
            self,
            infer_model,
            stack,
            configured,
            inputs,
            outputs,
            batch_size,
            timeout_ms,
            declared_fps,
        )
        self._models.append(model)
        return model

    def _format_type(self, option: str) -> Any:
        value = option.strip().lower()
        if value in ("", "auto"):
            return None
        if value not in _FORMAT_OPTION:
            raise BackendError(f"unsupported Hailo format {option!r}: use auto, uint8 or float32")
        return getattr(self._hp.FormatType, _FORMAT_OPTION[value])

    def _spec(self, stream: Any) -> TensorSpec:
        fmt = _format_name(stream)
        if fmt not in _FORMATS:
            raise BackendError(f"tensor {stream.name} has unsupported HailoRT format {fmt}")
        return TensorSpec(
            name=str(stream.name),
            datatype=_FORMATS[fmt][0],
            shape=(-1, *(int(d) for d in stream.shape)),
        )

    def _bottleneck_fps(self, infer_model: Any) -> float:
        try:
            return float(infer_model.hef.bottleneck_fps())
        except (self.hailo_error, AttributeError):
            return 0.0

    def forget(self, model: HailoModel) -> None:
        with contextlib.suppress(ValueError):
            self._models.remove(model)

    def close(self) -> None:
        for model in list(self._models):
            model.close()
        if self._device is not None:
            with contextlib.suppress(Exception):
                self._device.release()
            self._device = None
        vdevice, self._vdevice = getattr(self, "_vdevice", None), None
        if vdevice is not None:
            vdevice.release()
