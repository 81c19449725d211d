"""A lone request may run another way (onnx: a session with more threads); the faster one wins.

No timing here: the choice is driven by the times it is told (AloneChoice), and the queue is
checked for which way it ran with a fake model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from hatswarm_agent.backends.base import Array, LoadedModel, TensorSpec
from hatswarm_agent.backends.onnx import OnnxBackend, open_session
from hatswarm_agent.serving.batching import AloneChoice, ModelQueue
from hatswarm_agent.serving.tensors import DecodedRequest

from tests.onnxmodels import build_mlp


class TwoWays(LoadedModel):
    """A model that records which way each run went."""

    runs_alone = True

    def __init__(self) -> None:
        spec = TensorSpec("x", "FP32", (-1, 2))
        self.inputs: Sequence[TensorSpec] = (spec,)
        self.outputs: Sequence[TensorSpec] = (spec,)
        self.max_batch_size = 8
        self.ways: list[str] = []

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.ways.append("narrow")
        return dict(inputs)

    def run_alone(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.ways.append("wide")
        return dict(inputs)

    def capacity_fps(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def request() -> DecodedRequest:
    x = np.zeros((1, 2), np.float32)
    return DecodedRequest({"x": x}, 1, ((2,),), raw=True)


def test_choice_tries_both_then_keeps_the_faster_and_explores() -> None:
    choice = AloneChoice()
    assert choice.wide()  # unmeasured: try the wide way first
    choice.learn(True, 0.010)
    assert not choice.wide()  # then the narrow one
    choice.learn(False, 0.015)
    picks = [choice.wide() for _ in range(3 * AloneChoice.EXPLORE_EVERY)]
    assert picks.count(False) == 3  # the slower way once in EXPLORE_EVERY
    for _ in range(20):  # the node got busy: the wide way is now slower
        choice.learn(True, 0.030)
    picks = [choice.wide() for _ in range(2 * AloneChoice.EXPLORE_EVERY)]
    assert picks.count(True) == 2


async def test_lone_requests_run_alone_and_concurrent_ones_do_not() -> None:
    model = TwoWays()
    queue = ModelQueue(model, limit=100, max_batch_size=0, max_queue_delay_s=0, concurrency=2)
    await queue.submit(request())
    assert model.ways == ["wide"]
    await queue.submit(request())
    assert model.ways == ["wide", "narrow"]  # the other way gets measured too
    model.ways.clear()
    await asyncio.gather(*(queue.submit(request()) for _ in range(6)))
    # Six at once: only the first found the queue empty; the rest had company.
    assert model.ways.count("wide") + model.ways.count("narrow") == 6
    assert model.ways[1:] == ["narrow"] * 5
    await queue.close()


def test_onnx_adds_a_wide_session_only_for_slow_models(tmp_path: Path) -> None:
    path = build_mlp(tmp_path / "mlp.onnx")
    tiny = OnnxBackend().load(path, {"idle_intra_op_threads": "2"})
    assert tiny._wide is None  # microseconds per run: threads cannot help
    x = {"x": np.ones((3, 64), np.float32)}
    np.testing.assert_array_equal(tiny.run_alone(x)["y"], tiny.run(x)["y"])  # same session
    tiny.add_wide_session(open_session(path, {"intra_op_threads": "2"}))
    assert tiny._wide is not None
    np.testing.assert_allclose(tiny.run_alone(x)["y"], tiny.run(x)["y"], rtol=1e-6)
