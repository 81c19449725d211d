"""LoRA adapters without sockets: slot bookkeeping, backend fit checks, batching by adapter."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from grpc_health.v1.health import aio as health_aio
from hatswarm_agent.backends.base import AdapterModel, Array, BackendError, LoadedModel
from hatswarm_agent.backends.onnx import OnnxBackend, OnnxModel
from hatswarm_agent.backends.simulated import SimulatedBackend
from hatswarm_agent.control.artifacts import ArtifactStore
from hatswarm_agent.control.lifecycle import Backends, ModelLifecycle
from hatswarm_agent.control.sources import ArtifactSources
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.serving.adapters import AdapterSet
from hatswarm_agent.serving.batching import ModelQueue
from hatswarm_agent.serving.errors import (
    InvalidInputError,
    ModelNotFoundError,
    UnknownAdapterError,
)
from hatswarm_agent.serving.metrics import AgentMetrics
from hatswarm_agent.serving.registry import ModelRegistry
from hatswarm_agent.serving.tensors import DecodedRequest

from tests.onnxmodels import (
    IN,
    OUT,
    RANK,
    build_lora_base,
    direct_run,
    lora_adapter,
    write_adapter,
)

FAKES = Path(__file__).resolve().parents[3] / "fakes"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("lora")
    out = {"base": build_lora_base(d / "base.onnx")}
    for i, name in enumerate("abc"):
        out[name] = lora_adapter(d / f"{name}.onnx_adapter", seed=i)
    return out


@pytest.fixture(scope="module")
def base(files: dict[str, Path]) -> OnnxModel:
    return OnnxBackend().load(files["base"], {"workers": "1"})


class CountingModel(LoadedModel):
    """A LoadedModel whose adapters are their file names; records every load and run."""

    inputs = ()
    outputs = ()
    max_batch_size = 0

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.ran: list[str] = []

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.ran.append("")
        return {}

    def load_adapter(self, path: Path) -> object:
        if "bad" in path.name:
            raise BackendError("does not fit")
        self.loaded.append(path.name)
        return path.name

    def run_adapter(self, inputs: Mapping[str, Array], adapter: object) -> dict[str, Array]:
        self.ran.append(str(adapter))
        return {}

    def capacity_fps(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def test_slots_evict_least_recently_used_and_reload_from_the_path() -> None:
    model = CountingModel()
    assert isinstance(model, AdapterModel) and isinstance(model, LoadedModel)
    adapters = AdapterSet(model, slots=2, name="m", version="1")
    adapters.replace({n: Path(f"/cache/{n}") for n in "abc"})
    assert adapters.names() == ["a", "b", "c"]
    adapters.acquire("a")
    adapters.acquire("b")
    adapters.acquire("a")  # a is now the most recent: b goes first
    adapters.acquire("c")
    assert adapters.resident() == ["a", "c"] and adapters.evictions == 1
    adapters.run({}, "b")  # reloaded from its file, evicting a
    assert model.loaded == ["a", "b", "c", "b"] and model.ran == ["b"]
    assert adapters.resident() == ["c", "b"] and adapters.loads == 4
    adapters.acquire("c")
    assert adapters.loads == 4  # resident: no load


def test_unknown_adapter_is_not_found_naming_it_and_the_model() -> None:
    adapters = AdapterSet(CountingModel(), slots=4, name="m", version="1")
    adapters.replace({"a": Path("/cache/a")})
    with pytest.raises(UnknownAdapterError) as info:
        adapters.check("x")
    assert isinstance(info.value, ModelNotFoundError)
    assert str(info.value).startswith("adapter 'x' is not known for model 'm' version '1'")
    with pytest.raises(UnknownAdapterError):
        adapters.acquire("x")
    with pytest.raises(ValueError, match="at least one slot"):
        AdapterSet(CountingModel(), slots=0, name="m", version="1")


def test_replace_unloads_adapters_that_left_or_changed_file() -> None:
    model = CountingModel()
    adapters = AdapterSet(model, slots=4, name="m", version="1")
    adapters.replace({"a": Path("/cache/a"), "b": Path("/cache/b"), "c": Path("/cache/c")})
    for n in "abc":
        adapters.acquire(n)
    adapters.replace({"a": Path("/cache/a"), "c": Path("/cache/c2")})
    assert adapters.resident() == ["a"]
    adapters.acquire("c")
    assert model.loaded[-1] == "c2"
    with pytest.raises(BackendError, match="does not fit"):
        adapters.validate(Path("/cache/bad"))
    adapters.clear()
    assert adapters.names() == [] and adapters.resident() == []


def test_a_model_without_adapter_support_is_refused() -> None:
    class Plain(LoadedModel):
        inputs = outputs = ()
        max_batch_size = 0

        def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {}

        def capacity_fps(self) -> float:
            return 0.0

        def close(self) -> None:
            pass

    adapters = AdapterSet(Plain(), slots=1, name="m", version="1")
    with pytest.raises(BackendError, match="cannot run LoRA adapters"):
        adapters.validate(Path("/cache/a"))


def test_onnx_adapter_overrides_the_lora_parameters(
    base: OnnxModel, files: dict[str, Path]
) -> None:
    x = np.random.default_rng(3).standard_normal((3, IN)).astype(np.float32)
    plain = base.run({"x": x})["y"]
    np.testing.assert_allclose(plain, direct_run(files["base"], x), rtol=1e-6)
    for name in "abc":
        y = base.run_adapter({"x": x}, base.load_adapter(files[name]))["y"]
        np.testing.assert_allclose(y, direct_run(files["base"], x, files[name]), rtol=1e-6)
        assert not np.allclose(y, plain)
    assert base.max_batch_size > 0  # the LoRA parameters do not hide the batch dimension


def test_onnx_refuses_adapters_that_do_not_fit(base: OnnxModel, tmp_path: Path) -> None:
    a = np.zeros((RANK, IN), np.float32)
    cases = {
        "unknown parameter": ({"lora_C": a}, "'lora_C' is not an overridable initializer"),
        "wrong shape": ({"lora_A": np.zeros((RANK + 1, IN), np.float32)}, r"\[3, 16\]"),
        "wrong type": ({"lora_B": np.zeros((OUT, RANK), np.float64)}, "tensor\\(double\\)"),
    }
    for i, (params, message) in enumerate(cases.values()):
        with pytest.raises(BackendError, match=message):
            base.load_adapter(write_adapter(tmp_path / f"{i}.onnx_adapter", params))
    junk = tmp_path / "junk.onnx_adapter"
    junk.write_bytes(b"not an adapter at all")
    with pytest.raises(BackendError, match="not an onnxruntime adapter file"):
        base.load_adapter(junk)


def test_simulated_backend_runs_adapters_on_its_device(files: dict[str, Path]) -> None:
    model = SimulatedBackend("hailo8l").load(
        files["base"], {"fps_batch1": "100000", "workers": "1"}
    )
    x = np.ones((2, IN), np.float32)
    y = model.run_adapter({"x": x}, model.load_adapter(files["b"]))["y"]
    np.testing.assert_allclose(y, direct_run(files["base"], x, files["b"]), rtol=1e-6)


@pytest.fixture
def hailo_platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.delitem(sys.modules, "hailo_platform", raising=False)
    monkeypatch.syspath_prepend(str(FAKES))
    module = importlib.import_module("hailo_platform")
    assert module.__file__ is not None and Path(module.__file__).is_relative_to(FAKES)
    module.FAKE.reset()
    yield module
    sys.modules.pop("hailo_platform", None)


def test_hailo_refuses_adapters_clearly(
    hailo_platform: ModuleType, tmp_path: Path, files: dict[str, Path]
) -> None:
    from hatswarm_agent.backends.hailo import HailoBackend

    backend = HailoBackend()
    try:
        model = backend.load(hailo_platform.write_fake_hef(tmp_path / "m.hef"), {})
        with pytest.raises(BackendError, match=r"HEF .* no run-time LoRA"):
            AdapterSet(model, slots=1, name="m", version="1").validate(files["a"])
        model.close()
    finally:
        backend.close()


class SpyModel(LoadedModel):
    """The real base model; records which adapter and batch size each backend run had."""

    def __init__(self, inner: OnnxModel) -> None:
        self.inner = inner
        self.inputs, self.outputs = inner.inputs, inner.outputs
        self.max_batch_size = inner.max_batch_size
        self.runs: list[tuple[str, int]] = []

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.runs.append(("", inputs["x"].shape[0]))
        return self.inner.run(inputs)

    def load_adapter(self, path: Path) -> object:
        return (path.stem, self.inner.load_adapter(path))

    def run_adapter(self, inputs: Mapping[str, Array], adapter: object) -> dict[str, Array]:
        assert isinstance(adapter, tuple)
        self.runs.append((adapter[0], inputs["x"].shape[0]))
        return self.inner.run_adapter(inputs, adapter[1])

    def capacity_fps(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


async def test_batches_never_mix_adapters(base: OnnxModel, files: dict[str, Path]) -> None:
    spy = SpyModel(base)
    adapters = AdapterSet(spy, slots=2, name="m", version="1")
    adapters.replace({n: files[n] for n in "abc"})
    queue = ModelQueue(
        spy, limit=100, max_batch_size=8, max_queue_delay_s=0, concurrency=1, adapters=adapters
    )
    rng = np.random.default_rng(9)
    # Runs of equal adapters (which do merge) interleaved with others (which must not).
    plan = ["a", "a", "b", "", "", "a", "c", "c", "b", "b", "", "a"] * 2
    xs = [rng.standard_normal((1, IN)).astype(np.float32) for _ in plan]
    requests = [DecodedRequest({"x": x}, 1, ((IN,),), raw=True) for x in xs]
    results = await asyncio.gather(
        *(queue.submit(r, adapter) for r, adapter in zip(requests, plan, strict=True))
    )
    for x, adapter, result in zip(xs, plan, results, strict=True):
        expected = direct_run(files["base"], x, files[adapter] if adapter else None)
        np.testing.assert_allclose(result.outputs["y"], expected, rtol=1e-5, atol=1e-5)
    # Every request was queued before the one worker first ran: consecutive equal adapters
    # merged, different ones never did.
    assert sum(n for _, n in spy.runs) == len(plan)
    assert len(spy.runs) < len(plan)
    assert [a for a, _ in spy.runs] == [a for i, a in enumerate(plan) if i == 0 or a != plan[i - 1]]
    await queue.close()


# -- lifecycle: adapter artifacts are verified, pinned while known, and released -----------------


def lifecycle(tmp_path: Path, models: Path) -> ModelLifecycle:
    return ModelLifecycle(
        ModelRegistry(),
        AgentMetrics(),
        ArtifactStore(tmp_path / "cache", 1 << 30),
        Backends("onnxruntime", "cpu"),
        health_aio.HealthServicer(),
        sources=ArtifactSources(file_roots=[models]),
    )


def load_request(
    files: dict[str, Path], names: str, **options: str
) -> control_pb2.LoadModelRequest:
    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    return control_pb2.LoadModelRequest(
        name="m",
        uri=str(files["base"]),
        sha256=digest(files["base"]),
        options={"workers": "1", **options},
        adapters=[
            control_pb2.AdapterArtifact(name=n, uri=str(files[n]), sha256=digest(files[n]))
            for n in names
        ],
    )


async def test_lifecycle_pins_adapters_while_known_and_updates_without_reload(
    files: dict[str, Path], tmp_path: Path
) -> None:
    lc = lifecycle(tmp_path, files["base"].parent)
    store = lc.artifacts

    def pinned() -> set[str]:
        return {
            n for n in "abc" if store.is_pinned(hashlib.sha256(files[n].read_bytes()).hexdigest())
        }

    entry = await lc.load(load_request(files, "ab", adapter_slots="1"))
    assert entry.ready and entry.adapters is not None and entry.adapters.slots == 1
    assert entry.adapters.names() == ["a", "b"] and pinned() == {"a", "b"}
    model = entry.model
    same = await lc.load(load_request(files, "bc", adapter_slots="1"))
    assert same is entry and entry.model is model  # the base was not reloaded
    assert entry.adapters.names() == ["b", "c"] and pinned() == {"b", "c"}
    assert [a.name for a in entry.request.adapters] == ["b", "c"]
    await lc.unload("m")
    assert pinned() == set() and not store.is_pinned(entry.sha256)
    await lc.close()


async def test_lifecycle_refuses_a_bad_slot_option_and_a_duplicate_name(
    files: dict[str, Path], tmp_path: Path
) -> None:
    lc = lifecycle(tmp_path, files["base"].parent)
    with pytest.raises(InvalidInputError, match="adapter_slots=0 is out of range: 1 to 64"):
        await lc.load(load_request(files, "a", adapter_slots="0"))
    with pytest.raises(InvalidInputError, match="adapter 'a' given twice"):
        await lc.load(load_request(files, "aa"))
    await lc.close()
