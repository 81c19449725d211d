"""A lone request may run another way (onnx: a session with more threads); the faster one wins,
and no real request is ever sent the slower way to find out (that is what idle time is for).

No timing here: the choice is driven by the times it is told (AloneChoice), and the queue is
checked for which way it ran with a fake model.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from hatswarm_agent.backends.base import Array, BackendError, LoadedModel, TensorSpec
from hatswarm_agent.backends.onnx import WIDE_MIN_S, OnnxBackend, open_session
from hatswarm_agent.serving import batching
from hatswarm_agent.serving.batching import AloneChoice, ModelQueue
from hatswarm_agent.serving.tensors import DecodedRequest

from tests.onnxmodels import build_cnn, build_mlp, direct_run


class TwoWays(LoadedModel):
    """A model that records which way each run went (and its idle-time upkeep)."""

    runs_alone = True
    maintains = True

    def __init__(self, alone_times: tuple[float, float] = (0.0, 0.0)) -> None:
        self.alone_times = alone_times
        self.maintained: list[tuple[bool, bool]] = []
        self.retimed_to = (0.002, 0.001)
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

    def maintain(self, reclaim: bool, retime: bool) -> tuple[float, float] | None:
        self.maintained.append((reclaim, retime))
        return self.retimed_to if retime else None

    def capacity_fps(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def request() -> DecodedRequest:
    x = np.zeros((1, 2), np.float32)
    return DecodedRequest({"x": x}, 1, ((2,),), raw=True)


def test_choice_keeps_the_faster_way_and_never_explores_on_requests() -> None:
    """Within RECHECK_S of the last timing (the clock stands still here), no request is sent
    the slower way."""
    choice = AloneChoice()
    assert choice.wide(0.0)  # unmeasured (only before the backend timed it): the wide way
    choice.retime(narrow_s=0.015, wide_s=0.010, now=0.0)
    assert all(choice.wide(0.0) for _ in range(100))  # no request is sent the slow way
    for _ in range(20):  # the node got busy: the wide way, the one requests take, slows down
        choice.learn(True, 0.030, 0.0)
    assert not choice.wide(0.0)
    assert not any(choice.wide(0.0) for _ in range(100))  # narrow now, and only narrow learns
    choice.retime(
        narrow_s=0.015, wide_s=0.009, now=0.0
    )  # idle-time re-timing brings the wide way back
    assert choice.wide(0.0)


def test_a_few_slow_runs_do_not_flip_the_lone_way() -> None:
    """Only the way in use learns, so a flip on noise would stick: it takes a clear margin."""
    choice = AloneChoice()
    choice.retime(narrow_s=0.0075, wide_s=0.0045, now=0.0)
    assert choice.wide(0.0)
    for _ in range(3):  # hiccups: the wide way's average rises to ~8.8 ms, past narrow's 7.5
        choice.learn(True, 0.011, 0.0)
    assert choice.wide_s > choice.narrow_s
    assert choice.wide(0.0)  # within the margin: stays
    for _ in range(3):
        choice.learn(True, 0.0045, 0.0)  # and recovers
    assert choice.wide(0.0)
    for _ in range(10):
        choice.learn(True, 0.020, 0.0)  # a real slowdown: well past the margin
    assert not choice.wide(0.0)
    choice.learn(False, 0.016, 0.0)  # narrow slows down a little too: not enough to go back
    assert not choice.wide(0.0)
    choice.retime(
        narrow_s=0.0075, wide_s=0.008, now=0.0
    )  # a fresh timing of both: the faster, no margin
    assert not choice.wide(0.0)
    choice.retime(narrow_s=0.0075, wide_s=0.0070, now=0.0)
    assert choice.wide(0.0)


def test_a_stale_wide_figure_is_tried_once_and_backs_off_while_it_stays_slow() -> None:
    """A timing taken while the cores were busy must not pin lone requests to the narrow way
    for as long as traffic lasts: one request tries the wide way once its figure is a second
    old; a try that confirms narrow doubles the wait, one that finds it fast again switches."""
    choice = AloneChoice()
    choice.retime(narrow_s=0.0125, wide_s=0.030, now=100.0)  # timed while something else ran
    assert not any(choice.wide(100.0 + i / 1000) for i in range(900))  # fresh: never tried
    assert choice.wide(101.0)  # a second old: this one lone request tries it
    assert choice.trying
    assert not choice.wide(101.001)  # and only that one
    choice.learn(True, 0.031, now=101.01)  # still slow: the try's time replaces the figure
    assert choice.wide_s == pytest.approx(0.031)
    assert not any(choice.wide(101.01 + i / 100) for i in range(199))  # now it waits 2 s
    assert choice.wide(103.02)
    choice.learn(True, 0.030, now=103.05)
    assert not choice.wide(105.0) and choice.wide(107.1)  # then 4 s
    choice.learn(True, 0.011, now=107.11)  # quiet again: one faster run is enough, no margin
    assert all(choice.wide(107.2 + i) for i in range(10))  # back on the wide way
    assert choice.recheck_s == AloneChoice.RECHECK_S
    for _ in range(20):
        choice.learn(True, 0.040, now=120.0)
    assert not choice.wide(120.0)  # slow again under traffic: narrow, and tries start at 1 s
    assert choice.wide(121.0)


def test_tries_never_come_more_often_than_the_cap() -> None:
    choice = AloneChoice()
    choice.retime(narrow_s=0.010, wide_s=0.050, now=0.0)
    tries = []
    for tick in range(1, 2000):  # 2000 s of lone traffic, one request every 100 ms
        for step in range(10):
            now = tick + step / 10
            if choice.wide(now):
                tries.append(now)
                choice.learn(True, 0.050, now)
            else:
                choice.learn(False, 0.010, now)
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert len(tries) < 45  # 1, 2, 4, ... 32 s, then one a minute
    assert max(gaps) == pytest.approx(AloneChoice.RECHECK_MAX_S, abs=0.11)
    assert all(b >= a - 0.11 for a, b in itertools.pairwise(gaps))  # never closer


async def test_lone_requests_run_the_faster_way_and_concurrent_ones_narrow() -> None:
    model = TwoWays(alone_times=(0.015, 0.010))
    queue = ModelQueue(model, limit=100, max_batch_size=0, max_queue_delay_s=0, concurrency=2)
    for _ in range(10):
        await queue.submit(request())
    assert model.ways == ["wide"] * 10
    model.ways.clear()
    await asyncio.gather(*(queue.submit(request()) for _ in range(6)))
    # Six at once: only the first found the queue empty; the rest had company.
    assert model.ways == ["wide"] + ["narrow"] * 5
    await queue.close()


async def test_narrow_is_chosen_when_timed_faster() -> None:
    model = TwoWays(alone_times=(0.005, 0.008))
    queue = ModelQueue(model, limit=100, max_batch_size=0, max_queue_delay_s=0, concurrency=2)
    for _ in range(10):
        await queue.submit(request())
    assert model.ways == ["narrow"] * 10
    await queue.close()


async def test_the_queue_tries_a_stale_wide_way_with_one_lone_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(AloneChoice, "RECHECK_S", 0.05)
    model = TwoWays(alone_times=(0.005, 0.008))  # timed at load: narrow faster
    queue = ModelQueue(model, limit=100, max_batch_size=0, max_queue_delay_s=0, concurrency=2)
    for _ in range(5):
        await queue.submit(request())
    assert model.ways == ["narrow"] * 5
    await asyncio.sleep(0.06)
    for _ in range(5):
        await queue.submit(request())
    # One try; the fake's wide run takes microseconds, far under narrow's figure: it stays.
    assert model.ways == ["narrow"] * 5 + ["wide"] * 5
    await queue.close()


async def test_idle_queue_reclaims_after_a_burst_and_retimes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "IDLE_S", 0.01)
    model = TwoWays(alone_times=(0.005, 0.008))
    queue = ModelQueue(model, limit=100, max_batch_size=8, max_queue_delay_s=0, concurrency=1)
    await queue.submit(request())
    await asyncio.sleep(0.05)
    assert model.maintained == []  # a lone request is no burst, and re-timing is not due
    await asyncio.gather(*(queue.submit(request()) for _ in range(4)))  # a burst (batched)
    await poll_until(lambda: model.maintained, within=2.0)
    assert model.maintained == [(True, False)]
    x = np.zeros((3, 2), np.float32)  # one request of three items on an idle queue: a burst
    await queue.submit(DecodedRequest({"x": x}, 3, ((2,),), raw=True))
    await poll_until(lambda: len(model.maintained) == 2, within=2.0)
    assert model.maintained[1] == (True, False)
    monkeypatch.setattr(batching, "RETIME_EVERY_S", 0.0)
    await queue.submit(request())
    await poll_until(lambda: len(model.maintained) == 3, within=2.0)
    assert model.maintained[2] == (False, True)
    model.ways.clear()
    await queue.submit(request())  # the re-timing said wide is faster now (0.001 vs 0.002)
    assert model.ways == ["wide"]
    await queue.close()


async def test_a_wide_way_the_backend_let_go_is_not_chosen_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "IDLE_S", 0.01)
    monkeypatch.setattr(batching, "RETIME_EVERY_S", 0.0)
    model = TwoWays(alone_times=(0.010, 0.005))
    queue = ModelQueue(model, limit=100, max_batch_size=8, max_queue_delay_s=0, concurrency=1)
    await queue.submit(request())
    assert model.ways == ["wide"]

    def let_go(reclaim: bool, retime: bool) -> tuple[float, float]:
        model.runs_alone = False
        return (0.010, 0.0)

    monkeypatch.setattr(model, "maintain", let_go)
    await poll_until(lambda: not model.runs_alone, within=2.0)
    await asyncio.sleep(0.01)
    await queue.submit(request())
    assert model.ways == ["wide", "narrow"]
    await queue.close()


async def test_a_request_arriving_before_the_idle_timer_cancels_upkeep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "IDLE_S", 0.2)
    model = TwoWays(alone_times=(0.005, 0.008))
    queue = ModelQueue(model, limit=100, max_batch_size=8, max_queue_delay_s=0, concurrency=1)
    await asyncio.gather(*(queue.submit(request()) for _ in range(4)))
    for _ in range(5):  # busy again well within IDLE_S each time
        await asyncio.sleep(0.05)
        await queue.submit(request())
    assert model.maintained == []
    await poll_until(lambda: model.maintained, within=2.0)
    await queue.close()


async def poll_until(condition: Callable[[], object], within: float) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the fake model has no event to wait on
            await asyncio.sleep(0.01)


def test_onnx_adds_a_wide_session_only_for_slow_models(tmp_path: Path) -> None:
    path = build_mlp(tmp_path / "mlp.onnx")
    tiny = OnnxBackend().load(path, {"idle_intra_op_threads": "2"})
    assert tiny._wide is None  # microseconds per run: threads cannot help
    assert not tiny.runs_alone
    assert set(tiny.memory_bytes) == {"narrow"}
    x = {"x": np.ones((3, 64), np.float32)}
    np.testing.assert_array_equal(tiny.run_alone(x)["y"], tiny.run(x)["y"])  # same session
    tiny.add_wide_session(open_session(path, {"intra_op_threads": "2"}))
    assert tiny._wide is not None
    assert tiny.runs_alone
    np.testing.assert_allclose(tiny.run_alone(x)["y"], tiny.run(x)["y"], rtol=1e-6)
    narrow_s, wide_s = tiny.time_ways(runs=2)
    assert narrow_s > 0
    assert wide_s > 0
    tiny.drop_wide_session()
    assert not tiny.runs_alone
    assert tiny.time_ways(runs=2)[1] == 0.0


def test_onnx_sessions_option_forces_or_forbids_the_second_session(tmp_path: Path) -> None:
    path = build_cnn(tmp_path / "cnn.onnx", size=96, channels=32)
    options = {"idle_intra_op_threads": "2"}
    two = OnnxBackend().load(path, {**options, "sessions": "two"})
    if two.latency_s > WIDE_MIN_S:  # a model this small may run under the threshold here
        assert two._wide is not None
        assert set(two.memory_bytes) == {"narrow", "wide"}
        assert all(t > 0 for t in two.alone_times)
    one = OnnxBackend().load(path, {**options, "sessions": "one"})
    assert one._wide is None
    assert set(one.memory_bytes) == {"narrow"}
    with pytest.raises(BackendError, match="option sessions='three'"):
        OnnxBackend().load(path, {"sessions": "three"})


def test_onnx_auto_drops_the_wide_session_only_after_idle_timings_show_no_gain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = build_mlp(tmp_path / "mlp.onnx")
    model = OnnxBackend().load(path, {"sessions": "auto"})
    model.add_wide_session(open_session(path, {"intra_op_threads": "2"}))
    model.memory_bytes["wide"] = 1 << 20
    gains = iter([False, True, False, False, False])  # what each idle timing finds
    monkeypatch.setattr(model, "wide_pays", lambda: next(gains))
    for _ in range(4):  # no, yes (the count restarts), no, no: kept
        assert model.maintain(reclaim=False, retime=True) is not None
        assert model.runs_alone
    assert model.unpaid == 2
    model.maintain(reclaim=False, retime=True)  # a third time in a row: let go
    assert not model.runs_alone
    assert model._wide is None
    assert "wide" not in model.memory_bytes
    assert model.maintain(reclaim=False, retime=True) is None  # nothing left to time


@pytest.mark.parametrize("arena", ["shared", "session", "off"])
def test_onnx_arena_options_give_the_same_answers_and_reclaim(tmp_path: Path, arena: str) -> None:
    path = build_mlp(tmp_path / "mlp.onnx")
    model = OnnxBackend().load(path, {"arena": arena})
    x = {"x": np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)}
    want = direct_run(path, x["x"])
    np.testing.assert_allclose(
        np.asarray(model.run(x)["y"], np.float32), want, rtol=1e-5, atol=1e-6
    )
    assert model.maintain(reclaim=True, retime=True) is None  # no wide session: nothing to time
    np.testing.assert_allclose(
        np.asarray(model.run(x)["y"], np.float32), want, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(BackendError, match="option arena='big'"):
        OnnxBackend().load(path, {"arena": "big"})
