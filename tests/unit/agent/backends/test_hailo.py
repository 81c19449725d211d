"""The Hailo backend against a test double of HailoRT's `hailo_platform` InferModel API."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hatswarm_agent.backends.base import (
    Backend,
    BackendError,
    BackendUnavailableError,
    LoadedModel,
    TensorSpec,
)
from hatswarm_agent.backends.hailo import INSTALL_HINT, HailoBackend, hef_arch_from_name

FAKES = Path(__file__).resolve().parents[3] / "fakes"


@pytest.fixture
def hp(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake hailo_platform, importable only for the duration of one test."""
    monkeypatch.delitem(sys.modules, "hailo_platform", raising=False)
    monkeypatch.syspath_prepend(str(FAKES))
    module = importlib.import_module("hailo_platform")
    assert module.__file__ is not None
    assert Path(module.__file__).is_relative_to(FAKES)  # never a real HailoRT by accident
    module.FAKE.reset()
    yield module
    sys.modules.pop("hailo_platform", None)


@pytest.fixture
def backend(hp: ModuleType) -> Iterator[HailoBackend]:
    b = HailoBackend()
    yield b
    b.close()


def test_missing_hailo_platform_is_a_clear_unavailable_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "hailo_platform", None)  # import fails, as without HailoRT
    with pytest.raises(BackendUnavailableError) as info:
        HailoBackend()
    assert str(info.value) == INSTALL_HINT
    assert "sudo apt install hailo-all" in str(info.value)
    assert "--system-site-packages" in str(info.value)


def test_no_device_is_unavailable(hp: ModuleType) -> None:
    hp.FAKE.device_ids = []
    with pytest.raises(BackendUnavailableError, match="hailortcli scan"):
        HailoBackend()


def test_vdevice_uses_round_robin_scheduler(hp: ModuleType) -> None:
    b = HailoBackend()
    params = hp.FAKE.vdevices[-1].params
    assert params.scheduling_algorithm == hp.HailoSchedulingAlgorithm.ROUND_ROBIN
    assert params.multi_process_service is False
    b.close()
    assert hp.FAKE.vdevices[-1].released

    shared = HailoBackend(multi_process_service=True)
    params = hp.FAKE.vdevices[-1].params
    assert params.multi_process_service is True
    assert params.group_id == "SHARED"
    shared.close()


def test_backend_satisfies_protocols(backend: HailoBackend, tmp_path: Path, hp: ModuleType) -> None:
    assert isinstance(backend, Backend)
    assert backend.name == "hailo"
    model = backend.load(hp.write_fake_hef(tmp_path / "m.hef"), {})
    assert isinstance(model, LoadedModel)


def test_metadata_mapping(backend: HailoBackend, tmp_path: Path, hp: ModuleType) -> None:
    hef = hp.write_fake_hef(
        tmp_path / "yolo.hef",
        inputs=[{"name": "yolov8s/input_layer1", "shape": [640, 640, 3], "format": "UINT8"}],
        outputs=[
            {"name": "yolov8s/conv41", "shape": [80, 80, 64], "format": "UINT8"},
            {"name": "yolov8s/conv42", "shape": [80, 80, 80], "format": "UINT16"},
        ],
        bottleneck_fps=110.0,
    )
    model = backend.load(hef, {"max_batch_size": "4"})
    assert model.inputs == [TensorSpec("yolov8s/input_layer1", "UINT8", (-1, 640, 640, 3))]
    # Outputs are dequantized to float32 unless asked otherwise.
    assert model.outputs == [
        TensorSpec("yolov8s/conv41", "FP32", (-1, 80, 80, 64)),
        TensorSpec("yolov8s/conv42", "FP32", (-1, 80, 80, 80)),
    ]
    assert model.max_batch_size == 4
    assert hp.FAKE.vdevices[-1].infer_models[-1].batch_size == 4
    assert model.capacity_fps() == 110.0

    raw = backend.load(hef, {"output_format": "auto", "input_format": "float32"})
    assert [o.datatype for o in raw.outputs] == ["UINT8", "UINT16"]
    assert raw.inputs[0].datatype == "FP32"
    assert raw.max_batch_size == 8  # the default burst on the scheduler


def test_run_single_and_batched(backend: HailoBackend, tmp_path: Path, hp: ModuleType) -> None:
    model = backend.load(hp.write_fake_hef(tmp_path / "m.hef"), {})
    one = np.ones((1, 4, 4, 3), dtype=np.uint8)  # the fake device sums the frame: 48
    out = model.run({"net/input_layer1": one})
    assert list(out) == ["net/fc1"]
    assert out["net/fc1"].dtype == np.float32
    assert out["net/fc1"].shape == (1, 5)
    # raw (48 + k) % 256, dequantized with scale 0.5 and zero point 10
    np.testing.assert_array_equal(out["net/fc1"][0], (48 + np.arange(5) - 10) * 0.5)

    batch = np.stack([np.full((4, 4, 3), v, dtype=np.uint8) for v in (0, 1, 2)])
    out = model.run({"net/input_layer1": batch})
    assert out["net/fc1"].shape == (3, 5)
    for i, total in enumerate((0, 48, 96)):
        np.testing.assert_array_equal(out["net/fc1"][i], (total + np.arange(5) - 10) * 0.5)
    assert hp.FAKE.runs == [1, 3]  # one HailoRT run per request, one binding per frame


def test_run_multiple_inputs_and_raw_outputs(
    backend: HailoBackend, tmp_path: Path, hp: ModuleType
) -> None:
    hef = hp.write_fake_hef(
        tmp_path / "two.hef",
        inputs=[
            {"name": "a", "shape": [2, 2, 1], "format": "UINT8"},
            {"name": "b", "shape": [3], "format": "UINT8"},
        ],
        outputs=[
            {"name": "x", "shape": [2], "format": "UINT8"},
            {"name": "y", "shape": [4], "format": "UINT8"},
        ],
    )
    model = backend.load(hef, {"output_format": "uint8"})
    a = np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1)  # frame sums 6 and 22
    b = np.full((2, 3), 1, dtype=np.uint8)  # frame sums 3 and 3
    out = model.run({"a": a, "b": b})
    assert out["x"].dtype == np.uint8
    np.testing.assert_array_equal(out["x"], [[9, 10], [25, 26]])
    np.testing.assert_array_equal(out["y"], [[16, 17, 18, 19], [32, 33, 34, 35]])  # + 7 * 1


def test_float_inputs_are_quantized_by_hailort(
    backend: HailoBackend, tmp_path: Path, hp: ModuleType
) -> None:
    hef = hp.write_fake_hef(
        tmp_path / "f.hef",
        inputs=[{"name": "in", "shape": [2], "format": "UINT8", "scale": 0.5, "zero_point": 0}],
        outputs=[{"name": "out", "shape": [1], "format": "UINT8"}],
    )
    model = backend.load(hef, {"input_format": "float32", "output_format": "uint8"})
    out = model.run({"in": np.array([[1.0, 2.0]], dtype=np.float32)})  # quantized: 2 + 4
    np.testing.assert_array_equal(out["out"], [[6]])


def test_run_rejects_bad_inputs(backend: HailoBackend, tmp_path: Path, hp: ModuleType) -> None:
    model = backend.load(hp.write_fake_hef(tmp_path / "m.hef"), {})
    with pytest.raises(BackendError, match="expected shape"):
        model.run({"net/input_layer1": np.ones((1, 4, 4, 4), dtype=np.uint8)})
    with pytest.raises(BackendError, match="expected UINT8"):
        model.run({"net/input_layer1": np.ones((1, 4, 4, 3), dtype=np.float32)})
    with pytest.raises(BackendError, match="missing"):
        model.run({"other": np.ones((1, 4, 4, 3), dtype=np.uint8)})
    with pytest.raises(BackendError, match="at least one frame"):
        model.run({"net/input_layer1": np.ones((0, 4, 4, 3), dtype=np.uint8)})
    assert hp.FAKE.runs == []


def test_non_contiguous_input_is_accepted(
    backend: HailoBackend, tmp_path: Path, hp: ModuleType
) -> None:
    model = backend.load(hp.write_fake_hef(tmp_path / "m.hef"), {})
    big = np.ones((2, 4, 4, 6), dtype=np.uint8)
    view = big[:, :, :, ::2]  # not C-contiguous; HailoRT needs contiguous buffers
    out = model.run({"net/input_layer1": view})
    np.testing.assert_array_equal(out["net/fc1"][1], (48 + np.arange(5) - 10) * 0.5)


def test_device_info(backend: HailoBackend, hp: ModuleType) -> None:
    info = backend.device_info()
    assert info.accelerator == "hailo8l"
    assert info.device_id == "HLDDLBB241500123"  # the board serial, NULs stripped
    assert info.temperature_c == 53.5  # the hotter of the two on-die sensors
    assert info.watts == 1.75


@pytest.mark.parametrize(
    ("chip", "arch", "product"),
    [
        ("hailo8l", "HAILO8L", "HAILO-8L"),
        ("hailo8", "HAILO8", "HAILO-8 "),
        ("hailo10h", "HAILO10H", "HAILO-10H"),
    ],
)
def test_the_chip_is_what_hailort_identifies(
    hp: ModuleType, tmp_path: Path, chip: str, arch: str, product: str
) -> None:
    """Each AI HAT+ chip is reported as HailoRT's Control.identify() names it, and takes only
    the HEFs compiled for it."""
    hp.FAKE.use_chip(chip)
    assert hp.FAKE.arch == hp.DeviceArchitectureTypes[arch]
    b = HailoBackend()
    try:
        assert b.accelerator == chip
        assert b.device_info().accelerator == chip
        assert b.device_info().device_id == f"FAKE{chip.upper()}0001"
        assert b.product_name.startswith(product)
        model = b.load(hp.write_fake_hef(tmp_path / f"m_{chip}.hef", hw_arch=chip), {})
        out = model.run({"net/input_layer1": np.zeros((1, 4, 4, 3), dtype=np.uint8)})
        assert out["net/fc1"].shape == (1, 5)
        for other in {"hailo8l", "hailo8", "hailo10h"} - {chip}:
            named = hp.write_fake_hef(tmp_path / f"x_{other}.hef", hw_arch=other)
            with pytest.raises(BackendError, match=f"compiled for {other}"):
                b.load(named, {})  # refused by name, before HailoRT
            if not (chip == "hailo8" and other == "hailo8l"):  # that one HailoRT runs, slowly
                anonymous = hp.write_fake_hef(tmp_path / "anonymous.hef", hw_arch=other)
                with pytest.raises(BackendError, match="Invalid HEF"):
                    b.load(anonymous, {})  # refused by HailoRT itself
    finally:
        b.close()


def test_arch_of_maps_every_hailort_chip_name(hp: ModuleType) -> None:
    from hatswarm_agent.backends.hailo import _arch_of

    names = {t.name: _arch_of(t) for t in hp.DeviceArchitectureTypes}
    assert names["HAILO8_A0"] == names["HAILO8"] == "hailo8"
    assert names["HAILO8L"] == "hailo8l"
    assert names["HAILO10H"] == "hailo10h"


def test_device_info_without_power_monitoring(hp: ModuleType) -> None:
    hp.FAKE.power_w = None
    hp.FAKE.arch = hp.DeviceArchitectureTypes.HAILO8
    b = HailoBackend()
    info = b.device_info()
    assert info.accelerator == "hailo8"
    assert info.watts is None
    assert info.temperature_c == 53.5
    hp.FAKE.power_w = 3.0  # the backend stopped asking after the first failure
    assert b.device_info().watts is None
    b.close()


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("yolov8s_h8l.hef", "hailo8l"),
        ("https://zoo/v2.14.0/hailo8l/yolov11m.hef", "hailo8l"),
        ("resnet_v1_50_h8.hef", "hailo8"),
        ("/usr/share/hailo-models/yolov8s-hailo8.hef", "hailo8"),
        ("https://zoo/v5.0.0/hailo10h/yolov8s.hef", "hailo10h"),
        ("resnet_v1_50_h10h.hef", "hailo10h"),
        ("mobilenet_v2.hef", None),
        ("h8lx_model.hef", None),
    ],
)
def test_hef_arch_from_name(name: str, arch: str | None) -> None:
    assert hef_arch_from_name(name) == arch


def test_wrong_chip_is_refused(backend: HailoBackend, tmp_path: Path, hp: ModuleType) -> None:
    hef = hp.write_fake_hef(tmp_path / "m.hef", hw_arch="hailo8")
    with pytest.raises(BackendError, match=r"compiled for hailo8 but this node's NPU is a hailo8l"):
        backend.load(hef, {"hw_arch": "hailo8"})
    named = hp.write_fake_hef(tmp_path / "resnet_v1_50_h8.hef", hw_arch="hailo8")
    with pytest.raises(BackendError, match="--hw-arch hailo8l"):
        backend.load(named, {})
    with pytest.raises(BackendError, match="compiled for hailo8"):
        backend.load(hef, {"uri": "https://registry/models/resnet_v1_50_h8.hef"})
    assert hp.FAKE.vdevices[-1].infer_models == []  # refused before touching the NPU
    with pytest.raises(BackendError, match="hw_arch must be one of"):
        backend.load(hef, {"hw_arch": "hailo15h"})
    h10 = hp.write_fake_hef(tmp_path / "yolov8s_h10h.hef", hw_arch="hailo10h")
    with pytest.raises(
        BackendError, match="compiled for hailo10h but this node's NPU is a hailo8l"
    ):
        backend.load(h10, {})


def test_wrong_chip_refused_by_hailort_is_a_backend_error(
    backend: HailoBackend, tmp_path: Path, hp: ModuleType
) -> None:
    hef = hp.write_fake_hef(tmp_path / "undeclared.hef", hw_arch="hailo8")
    with pytest.raises(BackendError, match=r"HailoRT cannot load undeclared\.hef: Invalid HEF"):
        backend.load(hef, {})


def test_hailo8l_hef_on_hailo8_only_when_allowed(tmp_path: Path, hp: ModuleType) -> None:
    hp.FAKE.arch = hp.DeviceArchitectureTypes.HAILO8
    b = HailoBackend()
    hef = hp.write_fake_hef(tmp_path / "m.hef", hw_arch="hailo8l")
    with pytest.raises(BackendError, match="compiled for hailo8l"):
        b.load(hef, {"hw_arch": "hailo8l"})
    model = b.load(hef, {"hw_arch": "hailo8l", "allow_hailo8l_on_hailo8": "true"})
    assert model.inputs[0].datatype == "UINT8"
    b.close()


def test_invalid_hef_and_options(backend: HailoBackend, tmp_path: Path) -> None:
    junk = tmp_path / "junk.hef"
    junk.write_bytes(b"\x00not a hef")
    with pytest.raises(BackendError, match=r"HailoRT cannot load junk\.hef"):
        backend.load(junk, {})
    with pytest.raises(BackendError, match="max_batch_size must be an integer"):
        backend.load(junk, {"max_batch_size": "eight"})
    with pytest.raises(BackendError, match="unsupported Hailo format"):
        backend.load(junk, {"output_format": "int4"})


def test_close_releases_models_and_device(tmp_path: Path, hp: ModuleType) -> None:
    b = HailoBackend()
    model = b.load(hp.write_fake_hef(tmp_path / "m.hef"), {})
    configured_before = model._configured
    assert configured_before.is_open
    model.close()
    assert not configured_before.is_open
    with pytest.raises(BackendError, match="unloaded"):
        model.run({"net/input_layer1": np.ones((1, 4, 4, 3), dtype=np.uint8)})
    other = b.load(hp.write_fake_hef(tmp_path / "n.hef"), {})._configured
    assert other.is_open
    b.close()
    assert not other.is_open
    assert hp.FAKE.vdevices[-1].released
