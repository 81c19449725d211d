"""A test double of HailoRT's `hailo_platform` (4.18+ InferModel API), never shipped.

It exposes only what hatswarm's Hailo backend uses, with the real names and signatures
(hailo-ai/hailort: hailort/libhailort/bindings/python/platform/hailo_platform/pyhailort/
pyhailort.py). Tests put its parent directory on sys.path.

A "HEF" here is a JSON file (see `write_fake_hef`) describing inputs, outputs, quantization,
the target chip and the compiler's bottleneck FPS. "Inference" is deterministic numpy: for each
frame, the device sees the quantized inputs, sums them, and output element k of output j is
`(sum + k + 7*j) % 256` as a raw uint8, dequantized with the output's scale and zero point when
the user asked for FLOAT32. The device itself is `FAKE` (architecture, ids, sensors), which
tests adjust; a test that starts agent processes picks the chip with the environment variable
`HATSWARM_FAKE_HAILO_CHIP` (hailo8l, hailo8, hailo10h; `none` for HailoRT without a device).
Like libhailort, the device refuses a HEF compiled for another chip, except a Hailo-8L HEF on
a Hailo-8 (which HailoRT runs, slowly).
"""

from __future__ import annotations

import enum
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__version__ = "4.18.0"


class HailoRTException(Exception):  # noqa: N818 - the real name
    pass


class HailoRTTimeout(HailoRTException):
    pass


class HailoRTInvalidHEFException(HailoRTException):
    pass


class HailoRTNotFoundException(HailoRTException):
    pass


class HailoRTInvalidArgumentException(HailoRTException):
    pass


class FormatType(enum.Enum):
    AUTO = 0
    UINT8 = 1
    UINT16 = 2
    FLOAT32 = 3


class FormatOrder(enum.Enum):
    AUTO = 0
    NHWC = 1
    NC = 2


class HailoSchedulingAlgorithm(enum.Enum):
    NONE = 0
    ROUND_ROBIN = 1


class DvmTypes(enum.Enum):
    AUTO = 0
    VDD_CORE = 1
    OVERCURRENT_PROTECTION = 2


class PowerMeasurementTypes(enum.Enum):
    AUTO = 0
    SHUNT_VOLTAGE = 1
    BUS_VOLTAGE = 2
    POWER = 3
    CURRENT = 4


class DeviceArchitectureTypes(enum.IntEnum):
    """The real enum (pyhailort.py), values and all."""

    HAILO8_A0 = 0
    HAILO8 = 1
    HAILO8L = 2
    HAILO15H = 3
    HAILO15L = 4
    HAILO15M = 5
    HAILO10H = 6

    def __str__(self) -> str:
        return self.name


CHIPS = {
    "hailo8l": DeviceArchitectureTypes.HAILO8L,
    "hailo8": DeviceArchitectureTypes.HAILO8,
    "hailo10h": DeviceArchitectureTypes.HAILO10H,
}
# What `hailortcli fw-control identify` prints as the product of each board.
PRODUCT_NAMES = {
    DeviceArchitectureTypes.HAILO8L: "HAILO-8L AI ACC M.2 B+M KEY MODULE EXT TMP",
    DeviceArchitectureTypes.HAILO8: "HAILO-8 AI ACC M.2 M KEY MODULE EXT TEMP",
    DeviceArchitectureTypes.HAILO8_A0: "HAILO-8 AI ACC M.2 M KEY MODULE EXT TEMP",
    DeviceArchitectureTypes.HAILO10H: "HAILO-10H AI ACC M.2 M KEY MODULE",
}
# Which HEF targets each chip loads (libhailort's compatibility check, as far as hatswarm cares).
RUNS_HEFS = {
    DeviceArchitectureTypes.HAILO8L: {"hailo8l"},
    DeviceArchitectureTypes.HAILO8: {"hailo8", "hailo8l"},
    DeviceArchitectureTypes.HAILO8_A0: {"hailo8", "hailo8l"},
    DeviceArchitectureTypes.HAILO10H: {"hailo10h"},
}


_DTYPES = {FormatType.UINT8: np.uint8, FormatType.UINT16: np.uint16, FormatType.FLOAT32: np.float32}


@dataclass
class FakeHardware:
    """The one Hailo chip the fake pretends is on the PCIe bus."""

    arch: DeviceArchitectureTypes = DeviceArchitectureTypes.HAILO8L
    device_ids: list[str] = field(default_factory=lambda: ["0001:01:00.0"])
    serial_number: str = "HLDDLBB241500123\x00\x00"
    temperatures: tuple[float, float] = (51.25, 53.5)
    power_w: float | None = 1.75  # None: the board has no current monitoring
    vdevices: list[VDevice] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)  # frames per run() call

    def reset(self) -> None:
        fresh = FakeHardware()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def use_chip(self, chip: str) -> None:
        """Pretend `chip` is on the bus ("none": HailoRT is installed but finds no device)."""
        if chip == "none":
            self.device_ids = []
            return
        if chip not in CHIPS:
            raise ValueError(f"fake HailoRT: unknown chip {chip!r}: use {sorted(CHIPS)} or none")
        self.arch = CHIPS[chip]
        self.serial_number = f"FAKE{chip.upper()}0001\x00\x00"


FAKE = FakeHardware()
if os.environ.get("HATSWARM_FAKE_HAILO_CHIP"):
    FAKE.use_chip(os.environ["HATSWARM_FAKE_HAILO_CHIP"])


def write_fake_hef(
    path: Path,
    *,
    hw_arch: str = "hailo8l",
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    bottleneck_fps: float = 138.0,
) -> Path:
    """Write a fake HEF. Tensors: {"name", "shape" (per frame), "format", "scale", "zero_point"}."""
    doc = {
        "fake_hef": 1,
        "hw_arch": hw_arch,
        "bottleneck_fps": bottleneck_fps,
        "inputs": inputs or [{"name": "net/input_layer1", "shape": [4, 4, 3], "format": "UINT8"}],
        "outputs": outputs
        or [{"name": "net/fc1", "shape": [5], "format": "UINT8", "scale": 0.5, "zero_point": 10}],
    }
    path.write_text(json.dumps(doc))
    return path


class HEF:
    def __init__(self, hef_source: str | bytes) -> None:
        try:
            raw = Path(hef_source).read_bytes() if isinstance(hef_source, str) else hef_source
            self._doc = json.loads(raw)
            assert self._doc["fake_hef"] == 1
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            raise HailoRTInvalidHEFException(
                "Invalid HEF. See hailort.log for more information"
            ) from exc
        self._path = hef_source if isinstance(hef_source, str) else None

    @property
    def path(self) -> str | None:
        return self._path

    def bottleneck_fps(self, network_group_name: str | None = None) -> float:
        fps = float(self._doc["bottleneck_fps"])
        if fps == 0:
            raise HailoRTException("bottleneck_fps is zero")
        return fps


@dataclass
class _Format:
    type: FormatType
    order: FormatOrder


class InferModel:
    class InferStream:
        def __init__(self, desc: dict[str, Any]) -> None:
            self._desc = desc
            self._type = FormatType[desc["format"]]

        @property
        def name(self) -> str:
            return str(self._desc["name"])

        @property
        def shape(self) -> list[int]:
            return list(self._desc["shape"])

        @property
        def format(self) -> _Format:
            order = FormatOrder.NHWC if len(self._desc["shape"]) == 3 else FormatOrder.NC
            return _Format(self._type, order)

        def set_format_type(self, type: FormatType) -> None:
            if type not in _DTYPES:
                raise HailoRTInvalidArgumentException("Invalid argument")
            self._type = type

        @property
        def scale(self) -> float:
            return float(self._desc.get("scale", 1.0))

        @property
        def zero_point(self) -> float:
            return float(self._desc.get("zero_point", 0.0))

        def frame_nbytes(self) -> int:
            return math.prod(self.shape) * np.dtype(_DTYPES[self._type]).itemsize

    def __init__(self, hef: HEF, vdevice: VDevice) -> None:
        self._hef = hef
        self._vdevice = vdevice
        self._inputs = [self.InferStream(d) for d in hef._doc["inputs"]]
        self._outputs = [self.InferStream(d) for d in hef._doc["outputs"]]
        self.batch_size = 0  # HAILO_DEFAULT_BATCH_SIZE: automatic

    @property
    def hef(self) -> HEF:
        return self._hef

    def set_batch_size(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def configure(self) -> ConfiguredInferModel:
        if self._vdevice._released:
            raise HailoRTException("The VDevice has been released")
        return ConfiguredInferModel(self)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self._outputs]

    @property
    def inputs(self) -> list[InferModel.InferStream]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[InferModel.InferStream]:
        return list(self._outputs)

    @staticmethod
    def _pick(streams: list[InferModel.InferStream], name: str) -> InferModel.InferStream:
        if name == "" and len(streams) == 1:
            return streams[0]
        for s in streams:
            if s.name == name:
                return s
        raise HailoRTNotFoundException("Item not found. See hailort.log for more information")

    def input(self, name: str = "") -> InferModel.InferStream:
        return self._pick(self._inputs, name)

    def output(self, name: str = "") -> InferModel.InferStream:
        return self._pick(self._outputs, name)


class ConfiguredInferModel:
    class Bindings:
        class InferStream:
            def __init__(self, stream: InferModel.InferStream) -> None:
                self._stream = stream
                self._buffer: np.ndarray[Any, Any] | None = None

            def set_buffer(self, buffer: np.ndarray[Any, Any]) -> None:
                if not isinstance(buffer, np.ndarray) or not buffer.flags.c_contiguous:
                    raise HailoRTInvalidArgumentException("buffer must be a C-contiguous array")
                if buffer.nbytes != self._stream.frame_nbytes():
                    raise HailoRTInvalidArgumentException(
                        f"buffer of {buffer.nbytes} bytes for a frame of "
                        f"{self._stream.frame_nbytes()} bytes"
                    )
                self._buffer = buffer

            def get_buffer(self, tf_format: bool | None = False) -> np.ndarray[Any, Any] | None:
                return self._buffer

        def __init__(self, model: InferModel) -> None:
            self._model = model
            self._inputs = {s.name: self.InferStream(s) for s in model.inputs}
            self._outputs = {s.name: self.InferStream(s) for s in model.outputs}

        def input(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            return self._inputs[self._model.input(name).name]

        def output(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            return self._outputs[self._model.output(name).name]

    def __init__(self, model: InferModel) -> None:
        self._model: InferModel | None = model

    def __enter__(self) -> ConfiguredInferModel:
        return self

    def __exit__(self, *args: object) -> None:
        self._model = None

    @property
    def is_open(self) -> bool:
        return self._model is not None

    def create_bindings(
        self,
        input_buffers: dict[str, np.ndarray[Any, Any]] | None = None,
        output_buffers: dict[str, np.ndarray[Any, Any]] | None = None,
    ) -> ConfiguredInferModel.Bindings:
        if self._model is None:
            raise HailoRTException("ConfiguredInferModel was shut down")
        bindings = self.Bindings(self._model)
        for name, buf in (input_buffers or {}).items():
            bindings.input(name).set_buffer(buf)
        for name, buf in (output_buffers or {}).items():
            bindings.output(name).set_buffer(buf)
        return bindings

    def run(self, bindings: list[ConfiguredInferModel.Bindings], timeout: int) -> None:
        self.run_async(bindings).wait(timeout)

    def run_async(
        self, bindings: list[ConfiguredInferModel.Bindings], callback: Any = None
    ) -> AsyncInferJob:
        model = self._model
        if model is None:
            raise HailoRTException("ConfiguredInferModel was shut down")
        for binding in bindings:
            self._infer_frame(model, binding)
        FAKE.runs.append(len(bindings))
        return AsyncInferJob()

    @staticmethod
    def _infer_frame(model: InferModel, binding: ConfiguredInferModel.Bindings) -> None:
        total = 0
        for stream in model.inputs:
            buf = binding._inputs[stream.name]._buffer
            if buf is None:
                raise HailoRTException(f"input {stream.name} has no buffer")
            if buf.dtype == np.float32:  # the host quantizes float inputs
                q = np.clip(np.rint(buf / stream.scale + stream.zero_point), 0, 255)
            else:
                q = buf.astype(np.int64)
            total += int(q.sum())
        for j, stream in enumerate(model.outputs):
            out = binding._outputs[stream.name]._buffer
            if out is None:
                raise HailoRTException(f"output {stream.name} has no buffer")
            raw = (total + np.arange(out.size) + 7 * j) % 256
            if out.dtype == np.float32:
                out.reshape(-1)[:] = (raw - stream.zero_point) * stream.scale
            else:
                out.reshape(-1)[:] = raw

    def shutdown(self) -> None:
        self._model = None


class AsyncInferJob:
    def wait(self, timeout_ms: int) -> None:
        return None


class VDeviceParams:
    def __init__(self) -> None:
        self.device_count = 1
        self.scheduling_algorithm = HailoSchedulingAlgorithm.NONE
        self.group_id = "UNIQUE"
        self.multi_process_service = False


class VDevice:
    def __init__(self, params: VDeviceParams | None = None, *, device_ids: Any = None) -> None:
        if not FAKE.device_ids:
            raise HailoRTException(
                "libhailort failed with error: 74 (HAILO_OUT_OF_PHYSICAL_DEVICES)"
            )
        self.params = params or VDevice.create_params()
        self._released = False
        self.infer_models: list[InferModel] = []
        FAKE.vdevices.append(self)

    @staticmethod
    def create_params() -> VDeviceParams:
        return VDeviceParams()

    def __enter__(self) -> VDevice:
        return self

    def __exit__(self, *args: object) -> bool:
        self.release()
        return False

    def release(self) -> None:
        self._released = True

    @property
    def released(self) -> bool:
        return self._released

    def get_physical_devices_ids(self) -> list[str]:
        return list(FAKE.device_ids)

    def create_infer_model(self, hef_source: str | bytes, network_name: str = "") -> InferModel:
        if self._released:
            raise HailoRTException("VDevice was released")
        hef = HEF(hef_source)
        if hef._doc["hw_arch"] not in RUNS_HEFS.get(FAKE.arch, set()):
            # What libhailort answers for a HEF compiled for another chip.
            raise HailoRTInvalidHEFException("Invalid HEF. See hailort.log for more information")
        model = InferModel(hef, self)
        self.infer_models.append(model)
        return model


@dataclass
class TemperatureInfo:
    ts0_temperature: float
    ts1_temperature: float
    sample_count: int = 1


@dataclass
class BoardInformation:
    board_name: str
    device_architecture: DeviceArchitectureTypes
    serial_number: str
    part_number: str = ""
    product_name: str = "HAILO-8L AI ACC M.2 B+M KEY MODULE EXT TMP"


class Control:
    def __init__(self, device: Device) -> None:
        self._device = device

    def identify(self) -> BoardInformation:
        self._device._check()
        return BoardInformation(
            "Hailo-8" if FAKE.arch != DeviceArchitectureTypes.HAILO10H else "Hailo-10H",
            FAKE.arch,
            FAKE.serial_number,
            product_name=PRODUCT_NAMES.get(FAKE.arch, ""),
        )

    def get_chip_temperature(self) -> TemperatureInfo:
        self._device._check()
        return TemperatureInfo(*FAKE.temperatures)

    def power_measurement(
        self,
        dvm: DvmTypes = DvmTypes.AUTO,
        measurement_type: PowerMeasurementTypes = PowerMeasurementTypes.AUTO,
    ) -> float:
        self._device._check()
        if FAKE.power_w is None:
            raise HailoRTException("libhailort failed with error: 8 (HAILO_INVALID_OPERATION)")
        if measurement_type != PowerMeasurementTypes.POWER:
            return 0.0  # a voltage or current: the caller must ask for POWER to get watts
        return FAKE.power_w


class Device:
    opened: ClassVar[int] = 0

    @classmethod
    def scan(cls) -> list[str]:
        return list(FAKE.device_ids)

    def __init__(self, device_id: str | None = None) -> None:
        if device_id is None:
            if not FAKE.device_ids:
                raise HailoRTException("HailoRT device not found in the system")
            device_id = FAKE.device_ids[0]
        self._device_id = device_id
        self._released = False
        self._control_object = Control(self)
        Device.opened += 1

    def _check(self) -> None:
        if self._released:
            raise HailoRTException("The device in use has been released.")

    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def control(self) -> Control:
        return self._control_object

    def release(self) -> None:
        self._released = True

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *args: object) -> bool:
        self.release()
        return False


__all__ = [
    "CHIPS",
    "FAKE",
    "HEF",
    "Device",
    "DvmTypes",
    "FormatOrder",
    "FormatType",
    "HailoRTException",
    "HailoSchedulingAlgorithm",
    "PowerMeasurementTypes",
    "VDevice",
    "write_fake_hef",
]
