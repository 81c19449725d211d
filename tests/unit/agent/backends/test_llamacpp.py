"""The llama.cpp backend against llama-cpp-python's own completion and chat paths, on tiny
random-weight GGUF files the tests write (tests/ggufmodels.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.backends.generation import (
    EMBED,
    GENERATE,
    BackendBusyError,
    ContextLengthError,
    EmbeddingModel,
    GenerationParams,
    GenerationRequestError,
    GenerativeModel,
    Piece,
    TokenStream,
)
from hatswarm_agent.backends.isolation import ProcessModel

from tests.externaltools import missing
from tests.ggufmodels import GgufShape, build_gguf_model, reference_chat, reference_text

try:
    from hatswarm_agent.backends.llamacpp import (
        LlamaCppBackend,
        LlamaCppEmbedModel,
        LlamaCppModel,
    )

    LlamaCppBackend()
except BackendError as exc:  # llama-cpp-python not installed (make gguf)
    UNAVAILABLE: str | None = str(exc)
else:
    UNAVAILABLE = None

PROMPT = "hello world, the pool serves"
CHAT = "hello world"
GREEDY = GenerationParams(max_tokens=24, temperature=0.0)


@pytest.fixture(autouse=True)
def _llama_cpp() -> None:
    if UNAVAILABLE is not None:
        missing("llama-cpp-python", "run `make gguf`: " + UNAVAILABLE)


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gguf_model(tmp_path_factory.mktemp("gguf") / "tiny.gguf", seed=7)


@pytest.fixture(scope="module")
def plain_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No chat template: completion prompts only."""
    path = tmp_path_factory.mktemp("gguf") / "plain.gguf"
    return build_gguf_model(path, seed=3, chat_template=None)


@pytest.fixture
def backend() -> Iterator[LlamaCppBackend]:
    b = LlamaCppBackend()
    yield b
    b.close()


def thread_model(
    backend: LlamaCppBackend, path: Path, options: Mapping[str, str] | None = None
) -> LlamaCppModel:
    model = backend.load(path, {"isolation": "thread", **(options or {})})
    assert isinstance(model, LlamaCppModel)
    return model


async def collect(stream: TokenStream) -> tuple[list[Piece], str]:
    pieces = [piece async for piece in stream]
    return pieces, "".join(p.text for p in pieces)


async def test_greedy_completion_equals_llama_cpp_own(
    backend: LlamaCppBackend, gguf_file: Path
) -> None:
    text, prompt_tokens, completion_tokens = reference_text(gguf_file, PROMPT, 24)
    model = thread_model(backend, gguf_file)
    assert isinstance(model, GenerativeModel) and GENERATE in model.capabilities
    assert model.count_tokens(PROMPT) == prompt_tokens
    async with await model.generate(PROMPT, GREEDY) as stream:
        pieces, got = await collect(stream)
    assert got == text
    assert stream.usage.completion_tokens == completion_tokens
    assert sum(p.tokens for p in pieces) == completion_tokens
    assert all(len(p.token_ids) == p.tokens for p in pieces)
    assert len(pieces) > 1  # streamed token by token


async def test_chat_uses_the_gguf_template_like_llama_cpp(
    backend: LlamaCppBackend, gguf_file: Path
) -> None:
    text, prompt_tokens, completion_tokens = reference_chat(gguf_file, CHAT, 24)
    model = thread_model(backend, gguf_file)
    messages = [{"role": "user", "content": CHAT}]
    assert model.count_tokens(messages) == prompt_tokens
    stream = await model.generate(messages, GREEDY)
    _, got = await collect(stream)
    assert (got, stream.usage.completion_tokens) == (text, completion_tokens)


async def test_seeded_sampling_repeats_and_the_seed_matters(
    backend: LlamaCppBackend, gguf_file: Path
) -> None:
    model = thread_model(backend, gguf_file)

    async def sample(seed: int) -> str:
        params = GenerationParams(max_tokens=32, temperature=1.5, top_p=0.95, top_k=50, seed=seed)
        return await (await model.generate(PROMPT, params)).text()

    first, again = await sample(11), await sample(11)
    assert first == again
    assert {await sample(s) for s in (12, 13, 14)} != {first}


async def test_stop_sequences_and_max_tokens(backend: LlamaCppBackend, gguf_file: Path) -> None:
    model = thread_model(backend, gguf_file)
    full = await (await model.generate(PROMPT, GREEDY)).text()
    assert len(full) > 4
    stop = full[2:4]
    stream = await model.generate(
        PROMPT, GenerationParams(max_tokens=24, temperature=0, stop=(stop,))
    )
    cut = await stream.text()
    assert cut == full[: full.index(stop)]
    assert stream.finish_reason == "stop"
    short = await model.generate(PROMPT, GenerationParams(max_tokens=3, temperature=0))
    await short.text()
    assert (short.usage.completion_tokens, short.finish_reason) == (3, "length")


async def test_request_errors_name_the_problem(
    backend: LlamaCppBackend, gguf_file: Path, plain_file: Path
) -> None:
    model = thread_model(backend, gguf_file, {"context_length": "64"})
    assert model.context_length >= 64  # llama.cpp pads a context to a multiple of 256
    with pytest.raises(ContextLengthError, match=f"context is {model.context_length} tokens"):
        await model.generate("hello world " * model.context_length, GREEDY)
    with pytest.raises(GenerationRequestError, match="empty"):
        await model.generate("", GREEDY)
    plain = thread_model(backend, plain_file)
    with pytest.raises(GenerationRequestError, match="no chat template"):
        await plain.generate([{"role": "user", "content": "hi"}], GREEDY)
    templated = thread_model(backend, plain_file, {"chat_template": "{{ messages[0].content }}"})
    assert templated.has_chat_template


def test_a_file_that_is_not_gguf_is_refused_before_any_process(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"ONNX" + bytes(100))
    with pytest.raises(BackendError, match="not a GGUF file"):
        backend.load(bogus, {})
    with pytest.raises(BackendError, match="is a folder"):
        backend.load(tmp_path, {"isolation": "thread"})
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF" + bytes(12))
    with pytest.raises(BackendError, match=r"llama\.cpp cannot load cut\.gguf"):
        backend.load(truncated, {"isolation": "thread"})


async def test_one_sequence_slot_queues_then_refuses(
    backend: LlamaCppBackend, gguf_file: Path
) -> None:
    model = thread_model(backend, gguf_file, {"max_sequences": "1", "max_queued": "1"})
    long = GenerationParams(max_tokens=200, temperature=0)
    first = await model.generate(PROMPT, long)
    second = asyncio.create_task(model.generate(PROMPT, long))
    for _ in range(100):
        if model.load().queued_sequences:
            break
        await asyncio.sleep(0)
    assert model.load().queued_sequences == 1
    with pytest.raises(BackendBusyError):
        await model.generate(PROMPT, long)
    await first.aclose()
    await (await second).aclose()
    assert model.load().active_sequences == 0


def test_oip_run_generates_whole_completions(backend: LlamaCppBackend, gguf_file: Path) -> None:
    text, _, _ = reference_text(gguf_file, PROMPT, 10)
    model = thread_model(backend, gguf_file)
    out = model.run(
        {
            "text_input": np.array([PROMPT.encode()], dtype=object),
            "sampling_parameters": np.array(
                [b'{"max_tokens": 10, "temperature": 0}'], dtype=object
            ),
        }
    )
    assert out["text_output"][0].decode() == text


async def test_the_default_runs_the_model_in_a_child_process(
    backend: LlamaCppBackend, gguf_file: Path
) -> None:
    text, _, completion_tokens = reference_chat(gguf_file, CHAT, 24)
    model = backend.load(gguf_file, {})
    assert isinstance(model, ProcessModel) and model.pid is not None
    assert model.context_length == GgufShape().context_length
    stream = await model.generate([{"role": "user", "content": CHAT}], GREEDY)
    _, got = await collect(stream)
    assert (got, stream.usage.completion_tokens) == (text, completion_tokens)
    model.close()


def direct_embeddings(path: Path, texts: list[str]) -> tuple[np.ndarray, int]:
    """llama.cpp's own embedding mode, mean-pooled (the tiny decoder has no pooling type):
    (vectors, tokens)."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        n_ctx=256, n_batch=256, n_ubatch=256, verbose=False,
    )  # fmt: skip
    try:
        vectors, tokens = llm.embed(texts, normalize=True, return_count=True)
        return np.asarray(vectors, dtype=np.float32), int(tokens)
    finally:
        llm.close()


async def test_embedding_mode_equals_llama_cpp_own_vectors(
    backend: LlamaCppBackend, gguf_file: Path
) -> None:
    texts = ["hello world", "the quick brown fox jumps over the lazy dog."]
    model = backend.load(gguf_file, {"embedding": "true"})
    assert isinstance(model, LlamaCppEmbedModel)
    assert isinstance(model, EmbeddingModel) and EMBED in model.capabilities
    result = await model.embed(texts)
    assert result.vectors.shape == (2, GgufShape().hidden_size) == (2, model.dimensions)
    expected, tokens = direct_embeddings(gguf_file, texts)
    np.testing.assert_allclose(result.vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, rtol=1e-5)
    assert result.prompt_tokens == tokens > len(texts)
    out = model.run({"text": np.array([t.encode() for t in texts], dtype=object)})
    np.testing.assert_allclose(out["embedding"], result.vectors, atol=1e-6)
    with pytest.raises(GenerationRequestError, match="texts, not lists of token ids"):
        await model.embed([[1, 2, 3]])
    with pytest.raises(BackendError, match="option pooling='max'"):
        backend.load(gguf_file, {"embedding": "true", "pooling": "max"})
