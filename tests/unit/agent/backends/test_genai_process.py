"""The default onnxruntime-genai model: served from a child process (backends/isolation.py)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import time
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
    Piece,
)
from hatswarm_agent.backends.isolation import HOLD_IF_WITHIN_S, ProcessModel, _Forward

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


def test_forwarding_sends_at_once_unless_the_reader_is_behind_and_tokens_come_fast() -> None:
    """The child's adaptive bundling (isolation._Forward): the first piece and every piece
    while the parent keeps up go alone and at once; while the parent has not read the last
    message and tokens come fast, pieces wait and go together, in order; `flush` sends what
    waits before the end; pieces before "started" follow it."""
    sent: list[tuple[object, ...]] = []
    behind = [0]
    forward = _Forward(7, sent.append, lambda: None, lambda: behind[0])

    def piece(i: int) -> Piece:
        return Piece(str(i), 1, (i,))

    def texts(message: tuple[object, ...]) -> list[str]:
        assert message[0] == "pieces" and message[1] == 7
        return [p[0] for p in message[2]]  # type: ignore[attr-defined]

    forward(piece(0))  # before "started": held
    assert sent == []
    forward.open(5)
    assert sent[0][:3] == ("started", 7, 5) and texts(sent[1]) == ["0"]
    del sent[:]
    forward(piece(1))  # the reader keeps up: alone, at once
    assert [texts(m) for m in sent] == [["1"]]
    behind[0] = 512  # the reader is behind and tokens come fast: they wait
    forward(piece(2))
    forward(piece(3))
    assert [texts(m) for m in sent] == [["1"]]
    behind[0] = 0  # caught up: everything waiting goes in one message, in order
    forward(piece(4))
    assert [texts(m) for m in sent] == [["1"], ["2", "3", "4"]]
    behind[0] = 512
    forward(piece(5))
    forward.flush()  # the end: nothing stays behind
    assert [texts(m) for m in sent] == [["1"], ["2", "3", "4"], ["5"]]
    time.sleep(2 * HOLD_IF_WITHIN_S)  # a slow model: never held, even with the reader behind
    forward(piece(6))
    assert [texts(m) for m in sent][-1] == ["6"]
    forward.flush()
    assert len(sent) == 4
