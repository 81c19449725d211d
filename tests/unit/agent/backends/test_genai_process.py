"""The default onnxruntime-genai model: served from a child process (backends/isolation.py)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.backends.genai import GenaiBackend
from hatswarm_agent.backends.generation import (
    GENERATE,
    BackendBusyError,
    ContextLengthError,
    GenerationParams,
    GenerativeModel,
    Outcome,
    Piece,
)
from hatswarm_agent.backends.isolation import ProcessModel, _Forward
from hatswarm_agent.backends.processgroup import ProcessGroup

from tests.genaimodels import TinyDecoder, build_genai_model, reference, reference_pieces

PROMPT = "hello world, the pool serves"
GREEDY = GenerationParams(max_tokens=40, temperature=0.0)
# Large enough that a generation of a few hundred tokens is still running when the test acts.
MEDIUM = TinyDecoder(hidden_size=256, num_heads=4, num_kv_heads=2, num_layers=4, context_length=512)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_genai_model(tmp_path_factory.mktemp("genai") / "tiny", seed=7)


@pytest.fixture(scope="module")
def long_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A medium model whose end-of-sequence token never comes in its first 480 greedy tokens."""
    folder = build_genai_model(
        tmp_path_factory.mktemp("genai") / "medium", seed=1, shape=MEDIUM, chat_template=None
    )
    _, tokens, _ = reference(folder, PROMPT, 480, do_sample=False)
    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = [min(set(range(MEDIUM.vocab_size)) - set(tokens))]
    (folder / "genai_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def backend() -> Iterator[GenaiBackend]:
    b = GenaiBackend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def model(backend: GenaiBackend, folder: Path) -> ProcessModel:
    loaded = backend.load(folder, {})
    assert isinstance(loaded, ProcessModel)
    return loaded


async def test_the_model_lives_in_a_child_process(model: ProcessModel) -> None:
    assert model.pid is not None and model.pid != os.getpid()
    assert isinstance(model, GenerativeModel)
    assert GENERATE in model.capabilities
    assert model.context_length == 256
    assert [(s.name, s.optional) for s in model.inputs] == [
        ("text_input", False),
        ("sampling_parameters", True),
        ("stream", True),
        ("exclude_input_in_output", True),
    ]
    assert model.load().max_sequences == 2


async def test_greedy_output_equals_the_runtime_through_the_pipe(
    model: ProcessModel, folder: Path
) -> None:
    prompt_ids, expected, expected_text = reference(folder, PROMPT, 40, do_sample=False)
    stream = await model.generate(PROMPT, GREEDY)
    pieces = [piece async for piece in stream]
    assert [t for p in pieces for t in p.token_ids] == expected
    assert "".join(p.text for p in pieces) == expected_text
    assert stream.completion_tokens == len(expected)
    assert stream.prompt_tokens == len(prompt_ids) == model.count_tokens(PROMPT)
    assert stream.finish_reason in ("stop", "length")
    assert model.load().active_sequences == 0


async def test_chat_and_errors_cross_the_pipe_as_themselves(
    model: ProcessModel, folder: Path
) -> None:
    _, expected, _ = reference(folder, "hello world", 10, chat=True, do_sample=False)
    messages = [{"role": "user", "content": "hello world"}]
    stream = await model.generate(messages, GenerationParams(max_tokens=10, temperature=0))
    assert [t async for p in stream for t in p.token_ids] == expected
    with pytest.raises(ContextLengthError) as info:
        await model.generate("the quick brown fox " * 200, GREEDY)
    assert info.value.context_length == 256
    assert info.value.prompt_tokens > 256


async def test_oip_run_through_the_pipe(model: ProcessModel) -> None:
    expected = await (
        await model.generate(PROMPT, GenerationParams(max_tokens=8, temperature=0))
    ).text()
    out = await asyncio.to_thread(
        model.run,
        {
            "text_input": np.array([PROMPT.encode()], dtype=object),
            "sampling_parameters": np.array([b'{"max_tokens": 8, "temperature": 0}'], dtype=object),
        },
    )
    assert out["text_output"].tolist() == [expected.encode()]


async def test_busy_and_cancel_across_the_pipe(backend: GenaiBackend, long_folder: Path) -> None:
    model = backend.load(long_folder, {"max_sequences": "1", "max_queued": "0"})
    long = GenerationParams(max_tokens=480, temperature=0.0)
    first = await model.generate(PROMPT, long)
    assert model.load().active_sequences == 1
    with pytest.raises(BackendBusyError):
        await model.generate(PROMPT, long)
    async for _ in first:
        break
    await first.aclose()  # the child stops the generation and frees the slot
    assert model.load().active_sequences == 0
    assert first.completion_tokens < 480
    short = await model.generate(PROMPT, GenerationParams(max_tokens=3, temperature=0.0))
    assert (await short.text()) is not None
    assert short.completion_tokens == 3
    model.close()


async def test_the_agent_process_does_not_run_the_model(
    backend: GenaiBackend, long_folder: Path
) -> None:
    """CPU accounting, not timing: the decode steps burn the child's CPU, not the agent's."""
    model = backend.load(long_folder, {"intra_op_num_threads": "1"})
    assert isinstance(model, ProcessModel) and model.pid is not None
    child = psutil.Process(model.pid)
    child_before = sum(child.cpu_times()[:2])
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    stream = await model.generate(PROMPT, GenerationParams(max_tokens=400, temperature=0.0))
    await stream.text()
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    child_cpu = sum(child.cpu_times()[:2]) - child_before
    own_cpu = (own_after.ru_utime - own_before.ru_utime) + (
        own_after.ru_stime - own_before.ru_stime
    )
    assert stream.completion_tokens == 400
    assert own_cpu < child_cpu / 2, (own_cpu, child_cpu)
    model.close()


async def test_a_dead_worker_fails_clearly(backend: GenaiBackend, long_folder: Path) -> None:
    model = backend.load(long_folder, {})
    assert isinstance(model, ProcessModel) and model.pid is not None
    stream = await model.generate(PROMPT, GenerationParams(max_tokens=480, temperature=0.0))
    os.kill(model.pid, signal.SIGKILL)
    with pytest.raises(BackendError, match="died"):
        async for _ in stream:
            pass
    with pytest.raises(BackendError, match="died"):
        await model.generate(PROMPT, GREEDY)
    model.close()


def test_a_folder_that_does_not_load_fails_at_load(backend: GenaiBackend, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="genai_config"):
        backend.load(tmp_path, {})


async def test_a_consumer_that_falls_behind_gets_every_piece_at_once_with_exact_tokens(
    model: ProcessModel, folder: Path
) -> None:
    """A fast generation whose pieces pile up (in the pipe, in the stream) while the consumer
    is away: one `ready()` takes them all, in order, each piece the runtime's own, and the
    usage counts tokens, not pieces or messages."""
    expected = reference_pieces(folder, PROMPT, 40)
    assert len(expected) > 3
    stream = await model.generate(PROMPT, GREEDY)
    first = await stream.__anext__()
    for _ in range(3000):  # until the end has arrived: every piece is in by then
        if stream.ended:
            break
        await asyncio.sleep(0.01)
    assert stream.ended
    rest = stream.ready()
    assert stream.ready() == []  # taken
    assert [p async for p in stream] == []  # only the end was left
    got = [first, *rest]
    assert [(p.text, p.tokens) for p in got] == expected
    _, ids, _ = reference(folder, PROMPT, 40, do_sample=False)
    assert [t for p in got for t in p.token_ids] == ids
    tokens = len(ids)
    assert stream.completion_tokens == sum(p.tokens for p in got) == tokens
    assert stream.usage.completion_tokens == tokens
    assert stream.finish_reason in ("stop", "length")


def test_forwarding_sends_each_piece_at_once_after_started() -> None:
    """The child's forwarder (isolation._Forward) holds nothing once "started" has gone: a
    piece (a producer that sends one at a time) or a bundle (PieceSender's) goes as one
    message, in order; pieces before "started" follow it."""
    sent: list[tuple[object, ...]] = []
    forward = _Forward(7, sent.append, lambda: None)

    def texts() -> list[list[str]]:
        assert all(m[0] == "pieces" and m[1] == 7 for m in sent)
        return [[p[0] for p in m[2]] for m in sent]  # type: ignore[attr-defined]

    forward(Piece("0", 1, (0,)))  # before "started": held
    assert sent == []
    forward.open(5)
    assert sent[0][:3] == ("started", 7, 5) and sent[1][2][0][0] == "0"  # type: ignore[index]
    del sent[:]
    forward(Piece("1", 1, (1,)))
    forward(Piece("2", 1, (2,)))
    assert texts() == [["1"], ["2"]]
    forward.many([("3", 1, (3,), None), ("4", 2, (4, 5), None)])
    assert texts()[-1] == ["3", "4"]
    forward.flush()  # nothing waits
    assert len(sent) == 3


async def test_processes_run_sequences_side_by_side_each_in_its_own_child(
    backend: GenaiBackend, long_folder: Path
) -> None:
    """`processes=2`: two children, the second sequence goes to the idle one, both give the
    runtime's own tokens; the load adds up; closing ends both children."""
    model = backend.load(long_folder, {"processes": "2", "max_sequences": "1"})
    assert isinstance(model, ProcessGroup)
    assert len(set(model.pids)) == 2 and os.getpid() not in model.pids
    assert model.load().max_sequences == 2  # max_sequences is per process
    _, expected, _ = reference(long_folder, PROMPT, 200, do_sample=False)
    params = GenerationParams(max_tokens=200, temperature=0.0)
    first = await model.generate(PROMPT, params)
    second = await model.generate(PROMPT, params)
    assert sorted(model.in_flight) == [1, 1]  # one in each child, not two in one
    assert model.load().active_sequences == 2
    for stream in (first, second):
        assert [t async for p in stream for t in p.token_ids] == expected
    assert model.count_tokens(PROMPT) == first.prompt_tokens
    children = [psutil.Process(pid) for pid in model.pids if pid is not None]
    model.close()
    assert not any(
        child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children
    )


def test_processes_must_be_a_positive_count(backend: GenaiBackend, folder: Path) -> None:
    with pytest.raises(BackendError, match="processes=0 must be >= 1"):
        backend.load(folder, {"processes": "0"})


def test_the_end_goes_after_every_piece_and_never_before_started() -> None:
    """`_Forward.end` (the producer's thread, the slot already free): what waits, then "done"
    with the load; a producer that ends before "started" has gone is held until it has."""
    sent: list[tuple[object, ...]] = []
    forward = _Forward(3, sent.append, lambda: "load")
    forward(Piece("a", 1, (1,)))
    forward.end(Outcome("stop", 1))
    assert sent == []
    forward.open(4)
    assert [m[0] for m in sent] == ["started", "pieces", "done"]
    assert sent[2] == ("done", 3, Outcome("stop", 1), "load")
    failed: list[tuple[object, ...]] = []
    forward = _Forward(4, failed.append, lambda: "load")
    forward.open(2)
    forward(Piece("b", 1, (2,)))
    forward(Piece("c", 1, (3,)))
    forward.end(BackendError("boom"))
    assert [m[0] for m in failed] == ["started", "pieces", "pieces", "error"]
    assert [p[0] for p in failed[2][2]] == ["c"]  # type: ignore[index]
    assert isinstance(failed[3][2], BackendError) and failed[3][3] == "load"


def test_a_producers_own_bundle_goes_at_once_after_started_and_what_waits() -> None:
    """`_Forward.many` (a genai producer that bundles itself): held with the rest until
    "started", then in order after what waited; afterwards sent as it comes."""
    sent: list[tuple[object, ...]] = []
    forward = _Forward(5, sent.append, lambda: None)
    forward(Piece("a", 1, (1,)))
    forward.many([("b", 1, (2,), None), ("c", 2, (3, 4), None)])
    assert sent == []
    forward.open(3)
    assert [m[0] for m in sent] == ["started", "pieces"]
    assert [p[0] for p in sent[1][2]] == ["a", "b", "c"]  # type: ignore[index]
    forward.many([("d", 1, (5,), None), ("e", 1, (6,), None)])
    assert sent[-1][:3] == ("pieces", 5, [("d", 1, (5,), None), ("e", 1, (6,), None)])
