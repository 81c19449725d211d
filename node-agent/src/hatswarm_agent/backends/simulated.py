"""A simulated Hailo NPU: onnxruntime computes the answer, a per-model profile sets the pace.

Used by kind CI, the demo and the benchmarks, where no AI HAT+ exists. One device is shared by
every model on the node (an NPU runs one batch at a time), so runs are serialised on a device
lock and each takes max(real CPU time, profiled time x slowdown). Profiles default to the
hailo_model_zoo v2.18 figures in DESIGN.md; temperature and watts follow the device's recent
utilisation so cost attribution and thermal dashboards have something live to show.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from hatswarm_agent.backends.base import (
    Array,
    BackendError,
    DeviceInfo,
    LoadedModel,
    ModelProfile,
    TensorSpec,
)
from hatswarm_agent.backends.onnx import OnnxModel, open_session
from hatswarm_agent.backends.options import float_option

# Throughput (FPS) at batch 1 and batch 8, hailo_model_zoo v2.18 (DESIGN.md). Where the zoo
# gives one figure it serves for both; mobilenet_v2 on Hailo-8 is not listed, so it reuses the
# Hailo-8L figure (a floor: the Hailo-8 is never slower). Hailo-10H (AI HAT+ 2): the zoo's
# HAILO10H tables (yolov8s from the v2.16 object-detection table, resnet_v1_50 and
# mobilenet_v2_1.0 from the v5.0 classification table); not measured here.
PROFILES: dict[str, dict[str, ModelProfile]] = {
    "hailo8l": {
        "yolov8s": ModelProfile(110.0, 208.0),
        "resnet_v1_50": ModelProfile(138.0, 502.0),
        "mobilenet_v2": ModelProfile(1738.0, 1738.0),
    },
    "hailo8": {
        "yolov8s": ModelProfile(491.0, 491.0),
        "resnet_v1_50": ModelProfile(1372.0, 1372.0),
        "mobilenet_v2": ModelProfile(1738.0, 1738.0),
    },
    "hailo10h": {
        "yolov8s": ModelProfile(161.0, 306.0),
        "resnet_v1_50": ModelProfile(310.0, 1007.0),
        "mobilenet_v2": ModelProfile(2265.0, 2277.0),
    },
}
DEFAULT_PROFILE = "resnet_v1_50"

# Power envelope (W) and thermal model: idle and fully busy draw, ambient inside a Pi case and
# degrees per watt of the HAT's heatsink.
_WATTS = {"hailo8l": (0.3, 1.5), "hailo8": (0.4, 2.5), "hailo10h": (0.5, 2.5)}
_AMBIENT_C = 45.0
_C_PER_WATT = 12.0
_WINDOW_S = 10.0


def batch_seconds(profile: ModelProfile, n: int) -> float:
    """Device time for a batch of n: throughput interpolated between batch 1 and batch 8."""
    k = min(max(n, 1), 8)
    fps = profile.fps_batch1 + (profile.fps_batch8 - profile.fps_batch1) * (k - 1) / 7
    seconds = n / fps
    if n == 1 and profile.latency_ms_batch1 > 0:
        seconds = max(seconds, profile.latency_ms_batch1 / 1000)
    return seconds


def resolve_profile(accelerator: str, options: Mapping[str, str], stem: str) -> ModelProfile:
    """Explicit fps options win; else the named `profile`; else one named like the model."""
    table = PROFILES[accelerator]
    name = options.get("profile", "")
    if name and name not in table:
        raise BackendError(f"unknown profile {name!r} for {accelerator}: known {sorted(table)}")
    # A Kubernetes name cannot hold '_': EdgeModel mobilenet-v2 finds profile mobilenet_v2.
    base = (
        table.get(name) or table.get(stem) or table.get(stem.replace("-", "_"))
        or table[DEFAULT_PROFILE]
    )  # fmt: skip
    fps1 = float_option(options, "fps_batch1", base.fps_batch1)
    fps8 = float_option(
        options, "fps_batch8", base.fps_batch8 if "fps_batch1" not in options else fps1
    )
    latency = float_option(options, "latency_ms_batch1", base.latency_ms_batch1 or 1000 / fps1)
    return ModelProfile(fps1, fps8, latency)


class SimulatedDevice:
    """One NPU: serialises runs and turns its busy time into watts and degrees."""

    def __init__(self, accelerator: str) -> None:
        self.accelerator = accelerator
        self.idle_w, self.busy_w = _WATTS[accelerator]
        self.lock = threading.Lock()
        self._busy: deque[tuple[float, float]] = deque(maxlen=4096)

    def record(self, start: float, end: float) -> None:
        self._busy.append((start, end))

    def utilisation(self) -> float:
        now = time.monotonic()
        horizon = now - _WINDOW_S
        busy = sum(max(0.0, e - max(s, horizon)) for s, e in list(self._busy) if e > horizon)
        return min(1.0, busy / _WINDOW_S)

    def info(self) -> DeviceInfo:
        watts = self.idle_w + (self.busy_w - self.idle_w) * self.utilisation()
        return DeviceInfo(
            accelerator=self.accelerator,
            device_id=f"simulated-{self.accelerator}",
            temperature_c=round(_AMBIENT_C + _C_PER_WATT * watts, 2),
            watts=round(watts, 3),
        )


class SimulatedModel(LoadedModel):
    """An onnxruntime model paced to its profile on the shared simulated device."""

    concurrency = 1  # the device runs one batch at a time

    def __init__(
        self, inner: OnnxModel, device: SimulatedDevice, profile: ModelProfile, slowdown: float
    ) -> None:
        self._inner = inner
        self._device = device
        self.profile = profile
        self.slowdown = slowdown
        self.inputs: Sequence[TensorSpec] = inner.inputs
        self.outputs: Sequence[TensorSpec] = inner.outputs
        self.max_batch_size = inner.max_batch_size
        self.active_watts = device.busy_w

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        return self._paced(inputs, None)

    def load_adapter(self, path: Path) -> object:
        return self._inner.load_adapter(path)

    def run_adapter(self, inputs: Mapping[str, Array], adapter: object) -> dict[str, Array]:
        return self._paced(inputs, adapter)

    def _paced(self, inputs: Mapping[str, Array], adapter: object | None) -> dict[str, Array]:
        """Run on the shared device (with an adapter when given) at the profile's pace."""
        n = 1
        if self.max_batch_size:
            n = next(iter(inputs.values())).shape[0]
        target = batch_seconds(self.profile, n) * self.slowdown
        with self._device.lock:
            start = time.monotonic()
            if adapter is None:
                outputs = self._inner.run(inputs)
            else:
                outputs = self._inner.run_adapter(inputs, adapter)
            remaining = target - (time.monotonic() - start)
            if remaining > 0:
                time.sleep(remaining)
            self._device.record(start, time.monotonic())
        return outputs

    def capacity_fps(self) -> float:
        fps = self.profile.fps_batch8 if self.max_batch_size else self.profile.fps_batch1
        return fps / self.slowdown

    def close(self) -> None:
        self._inner.close()


class SimulatedBackend:
    """Hailo-8L or Hailo-8 simulated on the CPU."""

    name = "simulated"

    def __init__(self, accelerator: str = "hailo8l") -> None:
        if accelerator not in PROFILES:
            raise BackendError(
                "simulated backend needs accelerator hailo8l, hailo8 or hailo10h, "
                f"not {accelerator!r}"
            )
        self.device = SimulatedDevice(accelerator)

    def load(self, path: Path, options: Mapping[str, str]) -> SimulatedModel:
        slowdown = float_option(options, "slowdown", 1.0)
        if not math.isfinite(slowdown):
            raise BackendError("option slowdown must be finite")
        profile = resolve_profile(
            self.device.accelerator, options, options.get("model_name", path.stem)
        )
        inner = OnnxModel(open_session(path, options), options)
        return SimulatedModel(inner, self.device, profile, slowdown)

    def device_info(self) -> DeviceInfo:
        return self.device.info()

    def close(self) -> None:
        pass
