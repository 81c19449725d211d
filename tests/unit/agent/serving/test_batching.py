"""batching.py with a real onnxruntime model: merged runs equal unbatched ones, limits hold."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.backends.onnx import OnnxBackend, OnnxModel
from hatswarm_agent.serving.batching import ModelQueue, merge, split
from hatswarm_agent.serving.errors import ModelNotReadyError, QueueFullError
from hatswarm_agent.serving.tensors import DecodedRequest

from tests.onnxmodels import build_mlp, build_two_inputs


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    path = build_mlp(tmp_path_factory.mktemp("models") / "mlp.onnx")
    return OnnxBackend().load(path, {"max_batch_size": "8", "workers": "1"})


def request(x: np.ndarray) -> DecodedRequest:
    return DecodedRequest({"x": x}, x.shape[0], (x.shape[1:],), raw=True)


def test_merge_and_split_are_inverse_views() -> None:
    parts = [request(np.full((n, 2), n, np.float32)) for n in (1, 3, 2)]
    merged = merge(parts)
    assert merged["x"].shape == (6, 2)
    back = split(merged, [1, 3, 2])
    for p, b in zip(parts, back, strict=True):
        np.testing.assert_array_equal(b["x"], p.inputs["x"])
    with pytest.raises(BackendError, match="expected batch 7 first"):
        split(merged, [4, 3])


async def test_concurrent_requests_share_runs_and_match_unbatched(mlp: OnnxModel) -> None:
    runs: list[int] = []
    queue = ModelQueue(
        mlp, limit=100, max_batch_size=8, max_queue_delay_s=0, concurrency=1,
        on_execution=lambda items, _s: runs.append(items),
    )  # fmt: skip
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((n, 64)).astype(np.float32) for n in [1, 2, 1, 3, 1, 1, 2, 1] * 2]
    results = await asyncio.gather(*(queue.submit(request(x)) for x in xs))
    for x, result in zip(xs, results, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], mlp.run({"x": x})["y"])
    # All 16 requests (24 items) were queued before the single worker first ran: full batches.
    assert sum(runs) == 24
    assert len(runs) < len(xs)
    assert max(runs) <= 8
    await queue.close()


async def test_incompatible_shapes_never_merge(tmp_path: Path) -> None:
    model = OnnxBackend().load(build_two_inputs(tmp_path / "t.onnx"), {})
    assert model.max_batch_size == 0  # fixed shapes: no batch dimension
    queue = ModelQueue(model, limit=10, max_batch_size=8, max_queue_delay_s=0, concurrency=1)
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    reqs = [DecodedRequest({"a": a + i, "b": a}, 1, (), raw=True) for i in range(3)]
    results = await asyncio.gather(*(queue.submit(r) for r in reqs))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.outputs["sum"], a + i + a)
    await queue.close()


async def test_queue_limit_refuses_at_once_and_close_fails_waiters(mlp: OnnxModel) -> None:
    queue = ModelQueue(mlp, limit=2, max_batch_size=8, max_queue_delay_s=0, concurrency=1)
    x = np.zeros((1, 64), np.float32)
    first = [asyncio.ensure_future(queue.submit(request(x))) for _ in range(2)]
    await asyncio.sleep(0)
    assert queue.depth == 2
    with pytest.raises(QueueFullError, match=r"queue full \(2/2"):
        await queue.submit(request(x))
    await asyncio.gather(*first)
    assert queue.depth == 0
    await queue.close()
    with pytest.raises(ModelNotReadyError):
        await queue.submit(request(x))


async def test_queue_delay_fills_a_batch_while_another_runs(mlp: OnnxModel) -> None:
    runs: list[int] = []
    queue = ModelQueue(
        mlp, limit=100, max_batch_size=4, max_queue_delay_s=0.05, concurrency=2,
        on_execution=lambda items, _s: runs.append(items),
    )  # fmt: skip
    xs = [np.full((1, 64), i, np.float32) for i in range(12)]
    results = await asyncio.gather(*(queue.submit(request(x)) for x in xs))
    for x, r in zip(xs, results, strict=True):
        np.testing.assert_array_equal(r.outputs["y"], mlp.run({"x": x})["y"])
    assert sum(runs) == 12
    assert max(runs) <= 4
    await queue.close()


async def test_tiny_requests_run_inline_only_on_an_idle_queue(mlp: OnnxModel) -> None:
    runs: list[int] = []
    queue = ModelQueue(
        mlp, limit=100, max_batch_size=8, max_queue_delay_s=0, concurrency=1,
        on_execution=lambda items, _s: runs.append(items), inline_max_items=1,
    )  # fmt: skip
    x = np.full((1, 64), 0.5, np.float32)
    result = await queue.submit(request(x))  # idle: inline, no worker started
    np.testing.assert_array_equal(result.outputs["y"], mlp.run({"x": x})["y"])
    assert runs == [1] and result.queue_s == 0.0 and not queue._workers
    big = np.ones((2, 64), np.float32)
    await queue.submit(request(big))  # over the inline size: a worker thread, no batcher
    assert runs == [1, 2] and not queue._workers
    await asyncio.gather(*(queue.submit(request(big)) for _ in range(3)))  # company: batcher
    assert sum(runs) == 9 and len(queue._workers) == 1
    await queue.close()
