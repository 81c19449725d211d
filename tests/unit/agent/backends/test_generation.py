"""What generative backends share: stop sequences, sequence slots, token streams, folders."""

from __future__ import annotations

import asyncio
import itertools
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.backends.generation import (
    BUNDLE_S,
    FAST_TOKEN_S,
    BackendBusyError,
    Emitter,
    Outcome,
    Piece,
    PieceSender,
    PieceTuple,
    RuntimeTimer,
    SequenceSlots,
    StopMatcher,
    Timings,
    TokenStream,
    open_model_folder,
)
from hypothesis import given
from hypothesis import strategies as st


def feed_all(stops: list[str], chunks: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = ""
    for chunk in chunks:
        out += matcher.feed(chunk)
        if matcher.stopped:
            return out, True
    out += matcher.flush()
    return out, matcher.stopped


@given(
    text=st.text(alphabet="abc", max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=8),
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=3),
)
def test_stop_matching_is_independent_of_how_text_is_chunked(
    text: str, cuts: list[int], stops: list[str]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    expected = text[: min(hits)] if hits else text
    assert feed_all(stops, chunks) == (expected, bool(hits))


def test_stop_matcher_holds_back_only_a_possible_start() -> None:
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("hello </") == "hello "
    assert matcher.feed("e") == ""
    assert matcher.feed("x") == "</ex"  # not the stop after all: released
    assert matcher.feed("ok </en") == "ok "
    assert matcher.feed("d> rest") == ""
    assert matcher.stopped


async def test_slots_hand_over_in_order_and_refuse_beyond_the_queue() -> None:
    slots = SequenceSlots(1, queue=2)
    await slots.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await slots.acquire(prompt_tokens=10 * i)
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    assert (slots.active, slots.waiting, slots.waiting_tokens) == (1, 2, 30)
    with pytest.raises(BackendBusyError):
        await slots.acquire()
    with pytest.raises(BackendBusyError):
        slots.try_acquire()
    slots.release()
    await asyncio.wait_for(tasks[0], 1)
    assert order == [1]
    assert (slots.active, slots.waiting) == (1, 1)  # the slot passed on, never freed
    threading.Thread(target=slots.release).start()  # release works from a worker thread
    await asyncio.wait_for(tasks[1], 1)
    assert order == [1, 2]
    slots.release()
    assert slots.active == 0
    slots.try_acquire()
    assert slots.active == 1


async def test_token_stream_reports_producer_errors_and_usage() -> None:
    executor = ThreadPoolExecutor(1)
    done: list[bool] = []

    def good(emit: Emitter, cancelled: threading.Event) -> Outcome:
        emit(Piece("a", 1, (5,)))
        emit(Piece("", 2, (6, 7)))  # held-back bytes: tokens without text
        return Outcome("length", 3)

    stream = TokenStream.start(good, executor, 4, lambda: done.append(True))
    assert [p.text async for p in stream] == ["a", ""]
    assert done == [True]
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (4, 3)
    assert stream.finish_reason == "length"

    def bad(emit: Emitter, cancelled: threading.Event) -> Outcome:
        raise BackendError("device lost")

    failing = TokenStream.start(bad, executor, 1, lambda: done.append(True))
    with pytest.raises(BackendError, match="device lost"):
        await failing.text()
    assert done == [True, True]
    executor.shutdown()


def test_model_folders_from_tarballs_refuse_escapes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "marker.json").write_text("{}")
    good = tmp_path / "good.tar"
    with tarfile.open(good, "w") as tar:
        tar.add(src / "marker.json", arcname="marker.json")
    folder = open_model_folder(good, "marker.json")
    assert (folder.path / "marker.json").is_file()
    folder.cleanup()
    assert not folder.path.exists()

    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(src / "marker.json", arcname="../escaped.json")
    with pytest.raises(BackendError, match="cannot unpack"):
        open_model_folder(evil, "marker.json")
    assert not (tmp_path / "escaped.json").exists()
    (tmp_path / "plain.bin").write_bytes(b"not a tarball")
    with pytest.raises(BackendError, match="tarball"):
        open_model_folder(tmp_path / "plain.bin", "marker.json")


def test_runtime_timer_splits_at_the_first_piece() -> None:
    timer = RuntimeTimer()
    timer.spent = 0.2  # the prompt's evaluation and two tokens that printed nothing
    timer.first_piece(3)  # the third token printed
    timer.spent += 0.05
    timer.first_piece(5)  # later pieces do not move the split
    timer.spent += 0.05
    assert timer.timings(9) == Timings(prompt_s=0.2, decode_s=pytest.approx(0.1), decode_tokens=6)
    silent = RuntimeTimer()  # nothing printed: all of it is the prompt's time
    silent.spent = 0.3
    assert silent.timings(4) == Timings(0.3, 0.0, 0)


class _Bundles:
    """A process host's forwarder as the producer sees it (BundlingEmitter)."""

    def __init__(self) -> None:
        self.sends: list[list[str]] = []

    def __call__(self, piece: Piece) -> None:
        self.sends.append([piece.text])

    def many(self, pieces: list[PieceTuple]) -> None:
        self.sends.append([p[0] for p in pieces])


def test_piece_sender_bundles_fast_pieces_for_at_most_the_bundle_time() -> None:
    """On a clock the test drives (ms): the first piece goes at once; pieces under
    FAST_TOKEN_S apart wait until the oldest waiting is BUNDLE_S old, then go together in
    order; a slow piece takes what waits with it; `flush` sends the rest. A plain emitter
    gets one Piece a call."""
    fast, due = 1000 * FAST_TOKEN_S, 1000 * BUNDLE_S
    sink = _Bundles()
    sender = PieceSender(sink)

    def piece(text: str, at_ms: float) -> None:
        sender.send((text, 1, (0,), None), at_ms / 1000)

    piece("a", 0.0)
    assert sink.sends == [["a"]]
    at = 0.0
    texts = []
    while at + fast / 2 < due:  # a burst, half FAST_TOKEN_S apart, younger than BUNDLE_S
        at += fast / 2
        texts.append(f"t{at}")
        piece(texts[-1], at)
    assert sink.sends == [["a"]], "fast pieces wait"
    piece("due", fast / 2 + due)  # the oldest waiting one is BUNDLE_S old now
    assert sink.sends[-1] == [*texts, "due"]
    piece("b", fast / 2 + due + fast / 2)
    piece("slow", fast / 2 + due + fast / 2 + 2 * fast)  # a slow piece: at once, with "b"
    assert sink.sends[-1] == ["b", "slow"]
    piece("c", fast / 2 + due + fast / 2 + 2 * fast + fast / 2)
    assert sink.sends[-1] == ["b", "slow"]
    sender.flush()
    assert sink.sends[-1] == ["c"]
    sender.flush()
    assert len(sink.sends) == 4  # nothing twice

    plain: list[Piece] = []
    one = PieceSender(plain.append)
    one.send(("x", 2, (1, 2), -0.5), 0.0)
    one.send(("y", 1, (3,), None), 0.0001)
    one.flush()
    assert plain == [Piece("x", 2, (1, 2), -0.5), Piece("y", 1, (3,), None)]
