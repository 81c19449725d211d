"""The onnxruntime-genai backend against onnxruntime-genai's own Generator loop, on a tiny
random-weight model folder the tests write (tests/genaimodels.py)."""

from __future__ import annotations

import asyncio
import json
import tarfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime_genai as og
import pytest
from hatswarm_agent.backends import canonical_name, create_backend
from hatswarm_agent.backends.base import BackendError, LoadedModel
from hatswarm_agent.backends.genai import GenaiBackend, GenaiModel
from hatswarm_agent.backends.generation import (
    GENERATE,
    BackendBusyError,
    ContextLengthError,
    GenerationParams,
    GenerationRequestError,
    GenerativeModel,
    Piece,
    TokenStream,
)
from hatswarm_agent.backends.tokenstream import BUNDLE_S
from hatswarm_agent.serving.errors import status_for

from tests.genaimodels import CHAT_TEMPLATE, TinyDecoder, build_genai_model, reference

PROMPT = "hello world, the pool serves"
GREEDY = GenerationParams(max_tokens=40, temperature=0.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_genai_model(tmp_path_factory.mktemp("genai") / "tiny", seed=7)


class ThreadBackend(GenaiBackend):
    """The backend with models in this process (`isolation=thread`), so tests can look inside;
    test_genai_process.py covers the default, a model in a child process."""

    def load(self, path: Path, options: Mapping[str, str]) -> GenaiModel:  # type: ignore[override]
        model = super().load(path, {"isolation": "thread", **options})
        assert isinstance(model, GenaiModel)
        return model


@pytest.fixture
def backend() -> Iterator[ThreadBackend]:
    b = ThreadBackend()
    yield b
    b.close()


@pytest.fixture
def model(backend: ThreadBackend, folder: Path) -> GenaiModel:
    return backend.load(folder, {})


async def until_queued(model: GenaiModel) -> None:
    """Let the loop run until a request waits for a slot (it is queued on its first step)."""
    for _ in range(100):
        if model.load().queued_sequences:
            return
        await asyncio.sleep(0)
    raise AssertionError("no request got queued")


async def collect(stream: TokenStream) -> tuple[list[Piece], str]:
    pieces = [piece async for piece in stream]
    return pieces, "".join(p.text for p in pieces)


# -- the model folder ---------------------------------------------------------------------------


def test_builder_writes_the_graph_the_genai_builder_emits(folder: Path) -> None:
    graph = onnx.load(str(folder / "model.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert {
        "Gather",
        "SimplifiedLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "GroupQueryAttention",
        "Sigmoid",
        "MatMul",
    } <= ops
    shape = TinyDecoder()
    names = [i.name for i in graph.input]
    assert names[:2] == ["input_ids", "attention_mask"]
    assert graph.output[0].name == "logits"
    for i in range(shape.num_layers):
        assert f"past_key_values.{i}.key" in names and f"past_key_values.{i}.value" in names
        assert f"present.{i}.key" in [o.name for o in graph.output]
    gqa = next(n for n in graph.node if n.op_type == "GroupQueryAttention")
    assert gqa.domain == "com.microsoft"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gqa.attribute}
    assert attrs["num_heads"] == shape.num_heads and attrs["kv_num_heads"] == shape.num_kv_heads
    assert attrs["do_rotary"] == 1

    config = json.loads((folder / "genai_config.json").read_text())
    decoder = config["model"]["decoder"]
    assert decoder["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert decoder["outputs"]["present_value_names"] == "present.%d.value"
    assert config["search"]["past_present_share_buffer"] is True
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]


def test_builder_folder_loads_and_builds_deterministically(tmp_path: Path) -> None:
    a = build_genai_model(tmp_path / "a", seed=3)
    b = build_genai_model(tmp_path / "b", seed=3)
    # Same seed, same weights: byte-identical graphs and tokenizers.
    assert (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    model = og.Model(str(a))
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode(PROMPT)
    assert tokenizer.decode(ids) == PROMPT
    assert len(ids) < len(PROMPT)  # BPE merges: fewer tokens than characters


# -- generation ----------------------------------------------------------------------------------


async def test_greedy_output_equals_the_runtime_own_generator_loop(
    model: GenaiModel, folder: Path
) -> None:
    prompt_ids, expected, expected_text = reference(folder, PROMPT, 40, do_sample=False)
    stream = await model.generate(PROMPT, GREEDY)
    pieces, text = await collect(stream)
    assert [t for p in pieces for t in p.token_ids] == expected
    assert text == expected_text
    # Tokens, not chunks: every generated token counted once, whatever the pieces were.
    assert sum(p.tokens for p in pieces) == len(expected) == stream.completion_tokens
    assert stream.prompt_tokens == len(prompt_ids) == model.count_tokens(PROMPT)
    assert stream.usage.total_tokens == len(prompt_ids) + len(expected)
    assert stream.finish_reason == ("stop" if expected[-1] in model.eos_token_ids else "length")
    assert stream.first_token_s is not None


async def test_greedy_output_is_the_same_every_time(model: GenaiModel) -> None:
    first = await (await model.generate(PROMPT, GREEDY)).text()
    second = await (await model.generate(PROMPT, GREEDY)).text()
    assert first == second


async def test_a_follow_up_turn_reuses_the_kv_cache_of_the_first(
    model: GenaiModel, folder: Path
) -> None:
    """The next turn of a conversation (its prompt starts with the first turn's prompt and
    answer) rewinds the kept generator instead of prefilling again, with the same output."""
    first = await model.generate(PROMPT, GenerationParams(max_tokens=8, temperature=0.0))
    answer = await first.text()
    assert model.load().cached_prefix_tokens == first.prompt_tokens + 8
    follow_up = PROMPT + answer + " and then"
    prompt_ids, expected, expected_text = reference(folder, follow_up, 12, do_sample=False)
    hits = model.load().prefix_hit_tokens
    stream = await model.generate(follow_up, GenerationParams(max_tokens=12, temperature=0.0))
    pieces, text = await collect(stream)
    assert [t for p in pieces for t in p.token_ids] == expected
    assert text == expected_text
    reused = model.load().prefix_hit_tokens - hits
    assert first.prompt_tokens <= reused < len(prompt_ids)
    # A different prompt under the same options diverges at once: a fresh prefill, same answer.
    _, other, _ = reference(folder, "world hello", 6, do_sample=False)
    got = await model.generate("world hello", GenerationParams(max_tokens=6, temperature=0.0))
    assert [t for p in [piece async for piece in got] for t in p.token_ids] == other


async def test_a_kept_generator_too_short_for_the_next_request_is_not_reused(
    backend: ThreadBackend, folder: Path
) -> None:
    """Generators are only `prefix_headroom` tokens longer than their request (a KV cache is
    allocated whole): a follow-up that needs more gets a fresh one, with the same answer."""
    model = backend.load(folder, {"prefix_headroom": "4"})
    answer = await (
        await model.generate(PROMPT, GenerationParams(max_tokens=8, temperature=0))
    ).text()
    follow_up = PROMPT + answer + " and then"
    _, expected, _ = reference(folder, follow_up, 12, do_sample=False)
    stream = await model.generate(follow_up, GenerationParams(max_tokens=12, temperature=0.0))
    assert [t for p in [piece async for piece in stream] for t in p.token_ids] == expected
    assert model.load().prefix_hit_tokens == 0


async def test_the_prefix_cache_can_be_turned_off(backend: ThreadBackend, folder: Path) -> None:
    model = backend.load(folder, {"prefix_cache": "0"})
    await (await model.generate(PROMPT, GREEDY)).text()
    await (await model.generate(PROMPT + " more", GREEDY)).text()
    assert (model.load().cached_prefix_tokens, model.load().prefix_hit_tokens) == (0, 0)


async def test_chat_messages_go_through_the_tokenizer_config_chat_template(
    model: GenaiModel, folder: Path
) -> None:
    prompt_ids, expected, expected_text = reference(
        folder, "hello world", 20, chat=True, do_sample=False
    )
    messages = [{"role": "user", "content": "hello world"}]
    assert (
        model.render(messages) == "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"
    )
    stream = await model.generate(messages, GenerationParams(max_tokens=20, temperature=0.0))
    pieces, text = await collect(stream)
    assert [t for p in pieces for t in p.token_ids] == expected
    assert text == expected_text
    assert stream.prompt_tokens == len(prompt_ids)


async def test_a_model_without_a_chat_template_refuses_messages(
    backend: ThreadBackend, tmp_path: Path
) -> None:
    plain = backend.load(build_genai_model(tmp_path / "plain", chat_template=None), {})
    with pytest.raises(GenerationRequestError, match="no chat template"):
        await plain.generate([{"role": "user", "content": "hi"}], GREEDY)
    assert await (await plain.generate(PROMPT, GREEDY)).text() != ""
    # A template given as an option works where the folder has none.
    templated = backend.load(tmp_path / "plain", {"chat_template": CHAT_TEMPLATE})
    assert templated.render([{"role": "user", "content": "hi"}]).startswith("<|im_start|>user")


async def test_max_tokens_is_honoured(model: GenaiModel, folder: Path) -> None:
    _, expected, _ = reference(folder, PROMPT, 40, do_sample=False)
    # The test model's seed is fixed: a builder change that ends it early must fail loudly here.
    assert not any(t in model.eos_token_ids for t in expected[:5]), "the seed emits EOS early"
    stream = await model.generate(PROMPT, GenerationParams(max_tokens=5, temperature=0.0))
    pieces, _ = await collect(stream)
    assert [t for p in pieces for t in p.token_ids] == expected[:5]
    assert stream.completion_tokens == 5
    assert stream.finish_reason == "length"


async def test_eos_ends_the_generation_with_stop(backend: ThreadBackend, tmp_path: Path) -> None:
    folder = build_genai_model(tmp_path / "eos", seed=7)
    _, expected, _ = reference(folder, PROMPT, 40, do_sample=False)
    # Make the 6th greedy token an end-of-sequence token of this copy of the model.
    config = json.loads((folder / "genai_config.json").read_text())
    eos = expected[5]
    first = expected.index(eos)
    config["model"]["eos_token_id"] = [eos]
    (folder / "genai_config.json").write_text(json.dumps(config))
    model = backend.load(folder, {})
    stream = await model.generate(PROMPT, GREEDY)
    pieces, _ = await collect(stream)
    assert [t for p in pieces for t in p.token_ids] == expected[: first + 1]
    assert stream.completion_tokens == first + 1
    assert stream.finish_reason == "stop"


async def test_stop_sequences_cut_the_text_and_end_the_generation(
    model: GenaiModel, folder: Path
) -> None:
    _, expected, expected_text = reference(folder, PROMPT, 40, do_sample=False)
    printable = [
        i for i in range(8, len(expected_text) - 4) if expected_text[i : i + 3].isprintable()
    ]
    assert printable, "the test model's fixed seed gives no printable stretch to stop at"
    at = printable[0]
    stop = expected_text[at : at + 3]
    cut = expected_text.index(stop)
    stream = await model.generate(
        PROMPT, GenerationParams(max_tokens=40, temperature=0.0, stop=("\x00never", stop))
    )
    pieces, text = await collect(stream)
    assert text == expected_text[:cut]
    assert stream.finish_reason == "stop"
    generated = [t for p in pieces for t in p.token_ids]
    assert generated == expected[: len(generated)]
    assert stream.completion_tokens == len(generated) < len(expected)


async def test_seeded_sampling_is_reproducible_and_matches_the_runtime(
    model: GenaiModel, folder: Path
) -> None:
    params = GenerationParams(max_tokens=30, temperature=0.8, top_p=0.9, top_k=20, seed=42)
    _, expected, _ = reference(
        folder, PROMPT, 30, do_sample=True, temperature=0.8, top_p=0.9, top_k=20, random_seed=42
    )
    runs = []
    for _ in range(2):
        pieces, _ = await collect(await model.generate(PROMPT, params))
        runs.append([t for p in pieces for t in p.token_ids])
    assert runs[0] == runs[1] == expected
    other, _ = await collect(
        await model.generate(PROMPT, GenerationParams(**{**params.__dict__, "seed": 43}))
    )
    assert [t for p in other for t in p.token_ids] != expected


async def test_a_prompt_longer_than_the_context_is_refused_before_streaming(
    model: GenaiModel,
) -> None:
    long_prompt = "the quick brown fox " * 200
    with pytest.raises(ContextLengthError) as info:
        await model.generate(long_prompt, GREEDY)
    assert info.value.context_length == model.context_length == 256
    assert info.value.prompt_tokens == model.count_tokens(long_prompt) > 256
    assert status_for(info.value)[0] is grpc.StatusCode.INVALID_ARGUMENT


async def test_max_tokens_beyond_the_context_stops_at_the_context(model: GenaiModel) -> None:
    stream = await model.generate(PROMPT, GenerationParams(max_tokens=10_000, temperature=0.0))
    await stream.text()
    assert stream.prompt_tokens + stream.completion_tokens <= model.context_length


@pytest.mark.parametrize(
    "params",
    [
        GenerationParams(max_tokens=0),
        GenerationParams(temperature=-1),
        GenerationParams(top_p=0),
        GenerationParams(top_k=-2),
        GenerationParams(stop=("",)),
    ],
)
async def test_invalid_parameters_are_request_errors(
    model: GenaiModel, params: GenerationParams
) -> None:
    with pytest.raises(GenerationRequestError):
        await model.generate(PROMPT, params)


# -- concurrency ---------------------------------------------------------------------------------


async def test_the_concurrency_bound_refuses_with_resource_exhausted(
    backend: ThreadBackend, folder: Path
) -> None:
    model = backend.load(folder, {"max_sequences": "1", "max_queued": "0"})
    text = await (await model.generate(PROMPT, GREEDY)).text()
    assert model.load().active_sequences == 0  # a finished generation has freed its slot
    # A sequence in flight for as long as the test wants (a real one frees its slot on the
    # producer's thread the moment it ends: 40 tiny-model tokens take ~2 ms).
    await model._slots.acquire()
    assert model.load().active_sequences == 1
    with pytest.raises(BackendBusyError) as info:
        await model.generate(PROMPT, GREEDY)
    code, message, reason = status_for(info.value)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason == "queue_full"
    assert "1 sequence slots" in message
    model._slots.release()
    assert await (await model.generate(PROMPT, GREEDY)).text() == text


async def test_requests_wait_in_a_bounded_queue(backend: ThreadBackend, folder: Path) -> None:
    model = backend.load(folder, {"max_sequences": "1", "max_queued": "1"})
    expected = await (await model.generate(PROMPT, GREEDY)).text()
    await model._slots.acquire()  # a sequence in flight, for as long as the test wants
    second = asyncio.create_task(model.generate(PROMPT, GREEDY))
    await until_queued(model)
    load = model.load()
    assert (load.active_sequences, load.queued_sequences, load.max_sequences) == (1, 1, 1)
    assert load.queued_prompt_tokens == model.count_tokens(PROMPT)
    assert load.context_tokens_capacity == model.context_length
    with pytest.raises(BackendBusyError):
        await model.generate(PROMPT, GREEDY)
    model._slots.release()  # the sequence in flight ends: the waiting request gets its slot
    stream = await second
    assert await stream.text() == expected
    await stream.aclose()
    assert model.load().active_sequences == 0


async def test_concurrent_sequences_give_the_same_greedy_output(
    backend: ThreadBackend, folder: Path
) -> None:
    model = backend.load(folder, {"max_sequences": "2", "max_queued": "2"})
    prompts = [PROMPT, "once upon a time", PROMPT, "the quick brown fox"]
    alone = [await (await model.generate(p, GREEDY)).text() for p in prompts]

    async def one(p: str) -> str:
        return await (await model.generate(p, GREEDY)).text()

    together = await asyncio.gather(*(one(p) for p in prompts))
    assert list(together) == alone


async def test_closing_a_stream_frees_its_slot(backend: ThreadBackend, folder: Path) -> None:
    model = backend.load(folder, {"max_sequences": "1", "max_queued": "0"})
    async with await model.generate(PROMPT, GenerationParams(max_tokens=200, temperature=0)) as s:
        async for _ in s:
            break
    assert model.load().active_sequences == 0
    await (await model.generate(PROMPT, GREEDY)).text()


async def test_a_cancelled_waiter_leaves_the_queue(backend: ThreadBackend, folder: Path) -> None:
    model = backend.load(folder, {"max_sequences": "1", "max_queued": "1"})
    await model._slots.acquire()  # a sequence in flight
    waiter = asyncio.create_task(model.generate(PROMPT, GREEDY))
    await until_queued(model)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert model.load().queued_sequences == 0
    model._slots.release()
    assert model.load().active_sequences == 0
    await (await model.generate(PROMPT, GREEDY)).text()


# -- the OIP path, folders, registration -------------------------------------------------------


async def test_oip_run_uses_vllm_tensor_names(model: GenaiModel) -> None:
    assert isinstance(model, LoadedModel)
    assert isinstance(model, GenerativeModel)
    assert GENERATE in model.capabilities
    assert [(s.name, s.optional) for s in model.inputs] == [
        ("text_input", False),
        ("sampling_parameters", True),
        ("stream", True),
        ("exclude_input_in_output", True),
    ]
    assert [s.name for s in model.outputs] == ["text_output"]
    expected = await (
        await model.generate(PROMPT, GenerationParams(max_tokens=12, temperature=0))
    ).text()
    sampling = json.dumps({"max_tokens": 12, "temperature": 0})
    out = await asyncio.to_thread(
        model.run,
        {
            "text_input": np.array([PROMPT.encode()], dtype=object),
            "sampling_parameters": np.array([sampling.encode()], dtype=object),
        },
    )
    assert out["text_output"].tolist() == [expected.encode()]


def test_a_tarball_of_the_folder_loads_and_is_cleaned_up(
    backend: ThreadBackend, folder: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="tiny")
    model = backend.load(archive, {})
    unpacked = model._folder.path
    assert (unpacked / "genai_config.json").is_file()
    model.close()
    assert not unpacked.exists()


def test_an_incomplete_folder_is_refused(
    backend: ThreadBackend, folder: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "genai_config.json").write_text((folder / "genai_config.json").read_text())
    with pytest.raises(BackendError, match=r"model\.onnx"):
        backend.load(broken, {})
    with pytest.raises(BackendError, match=r"no genai_config\.json"):
        backend.load(tmp_path, {})
    with pytest.raises(BackendError, match="isolation"):
        GenaiBackend().load(folder, {"isolation": "container"})


def test_registered_by_name() -> None:
    assert canonical_name("genai") == "onnxruntime-genai"
    backend = create_backend("onnxruntime-genai")
    assert backend.name == "onnxruntime-genai"
    assert backend.device_info().accelerator == "cpu"
    backend.close()


def test_params_from_openai_ollama_and_vllm_names() -> None:
    assert GenerationParams.from_mapping({"max_tokens": 5, "stop": "x"}) == GenerationParams(
        max_tokens=5, stop=("x",)
    )
    assert GenerationParams.from_mapping({"num_predict": 7, "top_k": -1}).max_tokens == 7
    assert GenerationParams.from_mapping({"max_new_tokens": 3, "top_k": -1}).top_k == 0
    assert GenerationParams.from_mapping({"temperature": 0, "seed": 1}).greedy
    with pytest.raises(GenerationRequestError):
        GenerationParams.from_mapping({"temperature": "hot"})


async def test_log_probabilities_are_the_runtimes_own(model: GenaiModel, folder: Path) -> None:
    """Asked for (the router does, to judge an answer), each piece carries the summed natural
    log-probability of its tokens under the logits the runtime drew them from."""
    import dataclasses

    import onnxruntime_genai as og
    from hatswarm_agent.backends.genai import token_logprob

    stream = await model.generate(PROMPT, dataclasses.replace(GREEDY, max_tokens=12, logprobs=12))
    pieces, _ = await collect(stream)
    assert all(p.logprob is not None for p in pieces if p.tokens)
    ours = sum(p.logprob or 0.0 for p in pieces)
    # The reference: the runtime's loop, logits read before each step, softmax in numpy.
    og_model = og.Model(str(folder))
    ids = og.Tokenizer(og_model).encode(PROMPT)
    params = og.GeneratorParams(og_model)
    params.set_search_options(max_length=len(ids) + 12, do_sample=False)
    generator = og.Generator(og_model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    per_token: list[float] = []
    while not generator.is_done():
        logits = np.asarray(generator.get_logits(), dtype=np.float64).reshape(-1)
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        assert token == int(np.argmax(logits))  # greedy: the logits the token came from
        top = logits.max()
        per_token.append(float(logits[token] - top - np.log(np.exp(logits - top).sum())))
    assert ours == pytest.approx(sum(per_token), rel=1e-6)
    assert ours < 0
    assert token_logprob(np.array([0.0, 0.0]), 1) == pytest.approx(np.log(0.5))
    # Only the judging window reads logits: after 3 tokens, pieces carry none.
    window, _ = await collect(
        await model.generate(PROMPT, dataclasses.replace(GREEDY, max_tokens=12, logprobs=3))
    )
    seen = [p for p in window if p.tokens]
    assert sum(p.logprob or 0.0 for p in seen) == pytest.approx(sum(per_token[:3]), rel=1e-6)
    assert seen[-1].logprob is None
    # Not asked for: none computed (the hot path reads no logits).
    plain, _ = await collect(await model.generate(PROMPT, GREEDY))
    assert all(p.logprob is None for p in plain)


async def test_timings_are_the_runtimes_own_time_split_at_the_first_piece(
    model: GenaiModel,
) -> None:
    started = asyncio.get_running_loop().time()
    stream = await model.generate(PROMPT, GenerationParams(max_tokens=24, temperature=0.0))
    pieces, _ = await collect(stream)
    wall = asyncio.get_running_loop().time() - started
    timings = stream.timings
    assert timings is not None
    first = next(p for p in pieces if p.text)
    assert timings.decode_tokens == stream.completion_tokens - first.tokens
    assert timings.prompt_s > 0 and timings.decode_s > 0
    assert timings.prompt_s + timings.decode_s < wall  # the runtime's calls, inside the request


class Bundles:
    """A process host's emitter (BundlingEmitter): records each send, single or bundle."""

    def __init__(self) -> None:
        self.sends: list[list[tuple[str, int]]] = []

    def __call__(self, piece: Piece) -> None:
        self.sends.append([(piece.text, piece.tokens)])

    def many(self, pieces: list[tuple[str, int, tuple[int, ...], float | None]]) -> None:
        self.sends.append([(text, tokens) for text, tokens, _, _ in pieces])


class Clock:
    """perf_counter for the producer: `step` seconds later at every reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize(("step_s", "bundled"), [(0.0009, True), (0.005, False)])
def test_a_fast_models_pieces_go_to_a_process_host_in_bundles(
    model: GenaiModel, monkeypatch: pytest.MonkeyPatch, step_s: float, bundled: bool
) -> None:
    """Fast tokens (1.8 ms apart on this clock: under FAST_TOKEN_S) go a bundle per BUNDLE_S,
    the first piece alone and at once; slow ones (10 ms apart) one a send. Either way every piece is the runtime's
    own, in order, as the per-piece path emits them."""
    import hatswarm_agent.backends.genai as genai_module

    params = GenerationParams(max_tokens=40, temperature=0.0)
    expected: list[tuple[str, int]] = []
    model._producer(model._ids(PROMPT), params)(  # the per-piece path (a thread host's)
        lambda p: expected.append((p.text, p.tokens)), threading.Event()
    )
    monkeypatch.setattr(genai_module, "time", Clock(step_s))
    sink = Bundles()
    outcome = model._producer(model._ids(PROMPT), params)(sink, threading.Event())
    assert [piece for send in sink.sends for piece in send] == expected
    assert outcome.completion_tokens == 40 == sum(n for _, n in expected)
    assert len(sink.sends[0]) == 1  # the first token never waits
    if bundled:
        per_bundle = BUNDLE_S / (2 * step_s)  # two clock readings a token
        tokens = [sum(n for _, n in send) for send in sink.sends]
        assert len(tokens) >= 3, tokens  # 72 ms of tokens: several bundles, not one at the end
        assert max(tokens) <= 1.5 * per_bundle, tokens  # none held much past BUNDLE_S
        assert min(tokens[1:-1]) >= per_bundle / 1.5, tokens  # and none sent much sooner
    else:
        assert all(len(send) == 1 for send in sink.sends)
