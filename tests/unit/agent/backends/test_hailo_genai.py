"""The Hailo-10H GenAI backend against a test double of HailoRT's `hailo_platform.genai`."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import grpc
import numpy as np
import pytest
from hatswarm_agent.backends import create_backend
from hatswarm_agent.backends.base import BackendError, BackendUnavailableError, LoadedModel
from hatswarm_agent.backends.generation import (
    GENERATE,
    BackendBusyError,
    ContextLengthError,
    GenerationParams,
    GenerativeModel,
    TokenStream,
)
from hatswarm_agent.backends.hailo_genai import (
    DEFAULT_CONTEXT_LENGTH,
    INSTALL_HINT,
    HailoGenaiBackend,
    HailoLLMModel,
)
from hatswarm_agent.serving.errors import status_for

FAKES = Path(__file__).resolve().parents[3] / "fakes"
PROMPT = "hello world, the pool serves"
GREEDY = GenerationParams(max_tokens=12, temperature=0.0)


@pytest.fixture
def genai(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake hailo_platform.genai, importable only for the duration of one test."""
    for name in ("hailo_platform", "hailo_platform.genai"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(FAKES))
    module = importlib.import_module("hailo_platform.genai")
    assert module.__file__ is not None
    assert Path(module.__file__).is_relative_to(FAKES)  # never a real HailoRT by accident
    sys.modules["hailo_platform"].FAKE.reset()
    module.GENAI.reset()
    yield module
    for name in ("hailo_platform.genai", "hailo_platform"):
        sys.modules.pop(name, None)


@pytest.fixture
def hef(genai: ModuleType, tmp_path: Path) -> Path:
    return genai.write_fake_llm_hef(tmp_path / "qwen2-1.5b-instruct.hef", context_capacity=256)


@pytest.fixture
def backend(genai: ModuleType) -> Iterator[HailoGenaiBackend]:
    b = HailoGenaiBackend()
    yield b
    b.close()


def direct(genai: ModuleType, hef: Path, prompt: object, **kwargs: object) -> tuple[list[str], str]:
    """The fake's own LLM used directly, as HailoRT's docs show: (pieces, final status)."""
    with (
        genai.VDevice() as vdevice,
        genai.LLM(vdevice, str(hef)) as llm,
        llm.generate(prompt=prompt, **kwargs) as completion,
    ):
        pieces = list(completion)
        return pieces, completion.generation_status.name


async def collect(stream: TokenStream) -> str:
    return "".join([piece.text async for piece in stream])


def test_missing_genai_module_is_a_clear_unavailable_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "hailo_platform", None)
    with pytest.raises(BackendUnavailableError) as info:
        HailoGenaiBackend()
    assert str(info.value) == INSTALL_HINT
    assert "--system-site-packages" in str(info.value)


def test_load_describes_the_model(backend: HailoGenaiBackend, hef: Path, genai: ModuleType) -> None:
    model = backend.load(hef, {})
    assert isinstance(model, LoadedModel)
    assert isinstance(model, GenerativeModel)
    assert GENERATE in model.capabilities
    assert model.context_length == 256
    assert "im_start" in model.prompt_template
    assert [(s.name, s.optional) for s in model.inputs] == [
        ("text_input", False),
        ("sampling_parameters", True),
        ("stream", True),
        ("exclude_input_in_output", True),
    ]
    assert model.load().max_sequences == 1
    info = backend.device_info()
    assert info.accelerator == "hailo10h"
    assert info.device_id == "0001:01:00.0"
    assert info.temperature_c == 53.5
    # A folder holding the HEF loads too.
    assert backend.load(hef.parent, {}).context_length == 256


async def test_greedy_output_equals_the_llm_used_directly(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    pieces, status = direct(genai, hef, PROMPT, do_sample=False, max_generated_tokens=12)
    model = backend.load(hef, {})
    stream = await model.generate(PROMPT, GREEDY)
    assert await collect(stream) == "".join(pieces)
    assert stream.completion_tokens == len(pieces)
    assert stream.prompt_tokens == len(genai.tokenize_text(PROMPT))
    assert stream.finish_reason == ("length" if status == "MAX_TOKENS_REACHED" else "stop")
    call = genai.GENAI.generations[-1]
    assert call["do_sample"] is False
    assert call["max_generated_tokens"] == 12


async def test_every_request_starts_from_a_fresh_context(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    model = backend.load(hef, {})
    first = await collect(await model.generate(PROMPT, GREEDY))
    second = await collect(await model.generate(PROMPT, GREEDY))
    assert first == second  # without clear_context the LLM would continue the conversation
    # System messages are only allowed on a fresh context: this works on every request.
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    for _ in range(2):
        await collect(await model.generate(chat, GREEDY))


async def test_chat_prompt_tokens_are_read_off_the_device_context(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    messages = [{"role": "user", "content": "tell me about the edge"}]
    expected_prompt = len(genai.tokenize_text(genai.render_chatml(messages)))
    model = backend.load(hef, {})
    for max_tokens in (3, 100):  # hits the token limit (recovery sequence appended), or not
        stream = await model.generate(
            messages, GenerationParams(max_tokens=max_tokens, temperature=0)
        )
        await collect(stream)
        assert stream.prompt_tokens == expected_prompt
        pieces, _ = direct(genai, hef, messages, do_sample=False, max_generated_tokens=max_tokens)
        assert stream.completion_tokens == len(pieces)
    assert genai.GENAI.generations[-1]["prompt"] == messages
    assert model.count_tokens(messages) > len(genai.tokenize_text("tell me about the edge"))


async def test_max_tokens_ends_with_length(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    model = backend.load(hef, {})
    stream = await model.generate(PROMPT, GenerationParams(max_tokens=3, temperature=0))
    await collect(stream)
    assert stream.completion_tokens == 3
    assert stream.finish_reason == "length"


async def test_stop_sequences_reach_the_device_and_cut_the_text(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    pieces, _ = direct(genai, hef, PROMPT, do_sample=False, max_generated_tokens=12)
    full = "".join(pieces)
    stop = pieces[4].strip()
    model = backend.load(hef, {})
    stream = await model.generate(
        PROMPT, GenerationParams(max_tokens=12, temperature=0, stop=(stop,))
    )
    text = await collect(stream)
    assert text == full[: full.index(stop)]
    assert stream.finish_reason == "stop"
    llm = genai.GENAI.llms[-1]
    assert llm.get_stop_tokens() == ["<|im_end|>", stop]  # the model's own plus the request's
    await collect(await model.generate(PROMPT, GREEDY))
    assert llm.get_stop_tokens() == ["<|im_end|>"]  # and back for the next request


async def test_sampling_parameters_are_passed_to_the_device(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    model = backend.load(hef, {})
    params = GenerationParams(max_tokens=8, temperature=0.7, top_p=0.9, top_k=40, seed=42)
    first = await collect(await model.generate(PROMPT, params))
    call = genai.GENAI.generations[-1]
    assert (call["do_sample"], call["temperature"], call["top_p"], call["top_k"], call["seed"]) == (
        True,
        0.7,
        0.9,
        40,
        42,
    )
    assert await collect(await model.generate(PROMPT, params)) == first  # seeded


async def test_a_prompt_longer_than_the_context_is_refused_before_streaming(
    backend: HailoGenaiBackend, hef: Path
) -> None:
    model = backend.load(hef, {})
    with pytest.raises(ContextLengthError) as info:
        await model.generate("word " * 300, GREEDY)
    assert info.value.prompt_tokens == 300
    assert status_for(info.value)[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert model.load().active_sequences == 0  # the slot and the LLM object came back
    await collect(await model.generate(PROMPT, GREEDY))


async def test_one_generation_per_llm_object_and_busy_beyond(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    gate = threading.Event()
    genai.GENAI.gate = gate  # every read waits: the generation stays in flight
    model = backend.load(hef, {"max_sequences": "1", "max_queued": "0"})
    first = await model.generate(PROMPT, GREEDY)
    with pytest.raises(BackendBusyError) as info:
        await model.generate(PROMPT, GREEDY)
    code, _, reason = status_for(info.value)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_full")
    gate.set()
    assert await collect(first)
    assert model.load().active_sequences == 0


async def test_sequences_run_on_separate_llm_objects(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    model = backend.load(hef, {"max_sequences": "2", "max_queued": "4"})
    assert len(genai.GENAI.llms) == 2
    alone = await collect(await model.generate(PROMPT, GREEDY))

    async def one() -> str:
        return await collect(await model.generate(PROMPT, GREEDY))

    # Four requests, two LLM objects: the fake raises if two generations share one object.
    assert await asyncio.gather(*(one() for _ in range(4))) == [alone] * 4


async def test_closing_a_stream_mid_generation_frees_the_llm(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    model = backend.load(hef, {"max_sequences": "1", "max_queued": "0"})
    stream = await model.generate(PROMPT, GenerationParams(max_tokens=100, temperature=0))
    async for _ in stream:
        break
    await stream.aclose()
    assert model.load().active_sequences == 0
    assert await collect(await model.generate(PROMPT, GREEDY))


def test_oip_run(backend: HailoGenaiBackend, hef: Path, genai: ModuleType) -> None:
    pieces, _ = direct(genai, hef, PROMPT, do_sample=False, max_generated_tokens=5)
    model: HailoLLMModel = backend.load(hef, {})
    out = model.run(
        {
            "text_input": np.array([PROMPT.encode()], dtype=object),
            "sampling_parameters": np.array(
                [json.dumps({"max_tokens": 5, "temperature": 0}).encode()], dtype=object
            ),
        }
    )
    assert out["text_output"].tolist() == ["".join(pieces).encode()]


def test_a_hef_for_another_chip_is_refused(
    backend: HailoGenaiBackend, genai: ModuleType, tmp_path: Path
) -> None:
    with pytest.raises(BackendError, match="hailo8l"):
        backend.load(genai.write_fake_llm_hef(tmp_path / "m.hef"), {"hw_arch": "hailo8l"})
    other = genai.write_fake_llm_hef(tmp_path / "h8.hef", hw_arch="hailo8")
    with pytest.raises(BackendError, match="HAILO_INVALID_HEF"):
        backend.load(other, {})
    with pytest.raises(BackendError, match=r"expected one \.hef"):
        backend.load(tmp_path, {})


def test_close_releases_the_llms_and_the_vdevice(hef: Path, genai: ModuleType) -> None:
    backend = HailoGenaiBackend()
    backend.load(hef, {"max_sequences": "2"})
    backend.close()
    assert all(llm.released for llm in genai.GENAI.llms)
    assert sys.modules["hailo_platform"].FAKE.vdevices[-1].released


def test_registered_by_name(genai: ModuleType) -> None:
    backend = create_backend("hailo-genai")
    assert backend.name == "hailo-genai"
    assert backend.device_info().accelerator == "hailo10h"
    backend.close()


# -- older HailoRT 5.x ---------------------------------------------------------------------------


async def test_hailort_before_5_1_1_loads_and_generates_with_usage_counted(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    """HailoRT 5.1.0's LLM has no max_context_capacity, get_context_usage_size or
    save/load_context: the context length comes from the option (or the default), text prompts
    are counted exactly with tokenize, chat prompts with the routing estimate."""
    genai.GENAI.version = (5, 1, 0)
    assert not hasattr(genai.LLM(genai.VDevice(), str(hef)), "max_context_capacity")
    assert backend.load(hef, {}).context_length == DEFAULT_CONTEXT_LENGTH
    model = backend.load(hef, {"context_length": "256"})  # the HEF's, known to the user
    assert model.context_length == 256
    assert model.load().max_sequences == 1

    pieces, _ = direct(genai, hef, PROMPT, do_sample=False, max_generated_tokens=12)
    stream = await model.generate(PROMPT, GREEDY)
    assert await collect(stream) == "".join(pieces)
    assert (stream.prompt_tokens, stream.completion_tokens) == (
        len(genai.tokenize_text(PROMPT)),
        len(pieces),
    )
    with pytest.raises(ContextLengthError):
        await model.generate("word " * 300, GREEDY)

    messages = [{"role": "user", "content": "tell me about the edge"}]
    for max_tokens in (3, 100):  # hits the token limit, or not
        params = GenerationParams(max_tokens=max_tokens, temperature=0)
        stream = await model.generate(messages, params)
        text = await collect(stream)
        pieces, _ = direct(genai, hef, messages, do_sample=False, max_generated_tokens=max_tokens)
        assert text == "".join(pieces)
        assert stream.completion_tokens == len(pieces)
        # The estimate routing uses: the words of "user" and the content, then 4 + 3.
        assert stream.prompt_tokens == model.count_tokens(messages) == 1 + 5 + 4 + 3
    exact = len(genai.tokenize_text(genai.render_chatml(messages)))
    assert abs(stream.prompt_tokens - exact) <= exact // 2
    assert model.load().active_sequences == 0


async def test_hailort_before_5_1_1_continues_a_conversation_on_its_object(
    backend: HailoGenaiBackend, genai: ModuleType, tmp_path: Path
) -> None:
    genai.GENAI.version = (5, 1, 0)
    chat_hef = genai.write_fake_llm_hef(tmp_path / "chat.hef", words=CHAT_WORDS)
    model, llm, a1 = await first_turn(backend, chat_hef, genai)
    turn2 = [USER1, {"role": "assistant", "content": a1}, USER2]
    a2, stream = await answer(model, turn2)
    assert llm.calls[2:] == ["generate"]  # continued, only the new message sent
    assert genai.GENAI.generations[-1]["prompt"] == [USER2]
    assert a2 == fresh_answer(genai, chat_hef, turn2)
    assert stream.prompt_tokens == model.count_tokens(turn2)
    # The held context's size is the estimate plus the answer's tokens.
    held = model.count_tokens([USER1]) + len(genai.tokenize_text(a1)) + 1  # (+ end of turn)
    assert model.load().prefix_hit_tokens == held


def test_context_length_option_may_lower_the_hefs_not_raise_it(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    assert backend.load(hef, {"context_length": "128"}).context_length == 128
    with pytest.raises(BackendError, match="context_length=512 is over the HEF's context of 256"):
        backend.load(hef, {"context_length": "512"})
    assert all(llm.released for llm in genai.GENAI.llms[-1:])  # the refused load's object


def test_hailort_5_0_loads_without_optimize_memory_on_device(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType
) -> None:
    genai.GENAI.version = (5, 0, 1)  # LLM(vdevice, hef, lora_name) only
    assert backend.load(hef, {"context_length": "256"}).context_length == 256
    with pytest.raises(BackendError, match=r"optimize_memory_on_device needs HailoRT >= 5\.1\.0"):
        backend.load(hef, {"optimize_memory_on_device": "true"})
    genai.GENAI.version = (5, 2, 0)
    backend.load(hef, {"optimize_memory_on_device": "true"})
    assert genai.GENAI.llms[-1].optimize_memory_on_device is True


# -- conversations reuse the device's context ------------------------------------------------------

CHAT_WORDS = ["edge", "pool", "board", "tokens", "stream", "quickly.", "<|im_end|>"]
TALK = GenerationParams(max_tokens=50, temperature=0.0)
USER1 = {"role": "user", "content": "tell me about the edge"}
USER2 = {"role": "user", "content": "and the pool?"}
USER3 = {"role": "user", "content": "thanks, and the boards"}
HAT = {"role": "user", "content": "what is a hat"}  # another conversation's first message


@pytest.fixture
def chat_hef(genai: ModuleType, tmp_path: Path) -> Path:
    """A model whose answers end on their own (the end-of-turn word comes often)."""
    return genai.write_fake_llm_hef(tmp_path / "chat.hef", words=CHAT_WORDS)


async def answer(model: HailoLLMModel, messages: list[dict[str, str]]) -> tuple[str, TokenStream]:
    stream = await model.generate(messages, TALK)
    text = await collect(stream)
    assert stream.finish_reason == "stop"  # ended on its own: the context is a clean turn
    return text, stream


async def first_turn(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType, **options: str
) -> tuple[HailoLLMModel, Any, str]:
    """A model on one LLM object of the double that has answered [USER1], its device context
    holding that turn: (model, the LLM object, the answer)."""
    model = backend.load(hef, options)
    llm = genai.GENAI.llms[-1]
    a1, _ = await answer(model, [USER1])
    return model, llm, a1


class TwoHeld(NamedTuple):
    model: HailoLLMModel
    x: Any  # the double's LLM object that answered [USER1]
    y: Any  # the one that answered [HAT]
    a1: str
    b1: str


async def two_held(
    backend: HailoGenaiBackend, hef: Path, genai: ModuleType, **options: str
) -> TwoHeld:
    """A model on two LLM objects of the double (max_sequences 2), each holding the first turn
    of a conversation: [USER1] on x, then [HAT] on y."""
    model = backend.load(hef, {"max_sequences": "2", **options})
    x, y = genai.GENAI.llms[-2:]
    a1, _ = await answer(model, [USER1])
    b1, _ = await answer(model, [HAT])
    return TwoHeld(model, x, y, a1, b1)


def fresh_answer(genai: ModuleType, hef: Path, messages: list[dict[str, str]]) -> str:
    """The whole conversation prefilled on a fresh LLM object."""
    pieces, status = direct(genai, hef, messages, do_sample=False, max_generated_tokens=50)
    assert status == "LOGICAL_END_OF_GENERATION"
    return "".join(pieces)


def context_tokens(genai: ModuleType, messages: list[dict[str, str]], answer: str) -> int:
    """What a device context holds after answering `messages` (the end-of-turn token too)."""
    done = [*messages, {"role": "assistant", "content": answer}]
    return len(
        genai.tokenize_text(genai.render_chatml(done).removesuffix("<|im_start|>assistant\n"))
    )


async def test_a_second_turn_continues_the_context_with_only_the_new_message(
    backend: HailoGenaiBackend, chat_hef: Path, genai: ModuleType
) -> None:
    model, llm, a1 = await first_turn(backend, chat_hef, genai)
    turn1 = [USER1]
    assert llm.calls == ["clear_context", "generate"]
    held = context_tokens(genai, turn1, a1)
    assert model.load().cached_prefix_tokens == held
    assert model.load().prefix_hit_tokens == 0

    turn2 = [*turn1, {"role": "assistant", "content": a1}, USER2]
    a2, stream = await answer(model, turn2)
    assert llm.calls[2:] == ["generate"]  # no clear_context: the context goes on
    assert genai.GENAI.generations[-1]["prompt"] == [USER2]
    assert a2 == fresh_answer(genai, chat_hef, turn2)
    # Usage counts the whole conversation, as if prefilled; the reused part is reported.
    assert stream.prompt_tokens == len(genai.tokenize_text(genai.render_chatml(turn2)))
    assert model.load().prefix_hit_tokens == held

    # A third turn, with its own sampling parameters and stop sequence, goes on too.
    turn3 = [*turn2, {"role": "assistant", "content": a2}, USER3]
    params = GenerationParams(max_tokens=50, temperature=0.7, seed=7, stop=("zzz",))
    stream = await model.generate(turn3, params)
    a3 = await collect(stream)
    assert llm.calls[3:] == ["generate"]
    call = genai.GENAI.generations[-1]
    assert (call["prompt"], call["do_sample"], call["temperature"], call["seed"]) == (
        [USER3],
        True,
        0.7,
        7,
    )
    assert llm.get_stop_tokens() == ["<|im_end|>", "zzz"]
    pieces, _ = direct(
        genai, chat_hef, turn3, do_sample=True, temperature=0.7, top_p=1.0, seed=7,
        max_generated_tokens=50,
    )  # fmt: skip
    assert a3 == "".join(pieces)
    assert model.load().prefix_hit_tokens == held + context_tokens(genai, turn2, a2)


async def test_a_diverging_conversation_starts_from_a_cleared_context(
    backend: HailoGenaiBackend, chat_hef: Path, genai: ModuleType
) -> None:
    model, llm, a1 = await first_turn(backend, chat_hef, genai)
    diverging = [
        [USER1, {"role": "assistant", "content": a1 + " (edited)"}, USER2],  # another answer
        [{"role": "system", "content": "be brief"}, USER1, {"role": "assistant", "content": a1}],
        [USER1, {"role": "assistant", "content": a1}, {"role": "system", "content": "now terse"}],
        [USER1],  # the same first turn again (a regenerate)
    ]
    for messages in diverging:
        before = len(llm.calls)
        text, _ = await answer(model, messages)
        # (the conversation it held is saved first: a later turn of it may still come)
        assert llm.calls[before:] == ["save_context", "clear_context", "generate"]
        assert genai.GENAI.generations[-1]["prompt"] == messages
        assert text == fresh_answer(genai, chat_hef, messages)
    assert model.load().prefix_hit_tokens == 0


async def test_completion_prompts_are_always_stateless(
    backend: HailoGenaiBackend, chat_hef: Path, genai: ModuleType
) -> None:
    model, llm, a1 = await first_turn(backend, chat_hef, genai, prefix_cache="0")
    for _ in range(2):
        before = len(llm.calls)
        text = await collect(await model.generate(PROMPT, TALK))
        assert llm.calls[before:] == ["clear_context", "generate"]
        pieces, _ = direct(genai, chat_hef, PROMPT, do_sample=False, max_generated_tokens=50)
        assert text == "".join(pieces)
    # The completion replaced the conversation: its next turn is prefilled again.
    turn2 = [USER1, {"role": "assistant", "content": a1}, USER2]
    before = len(llm.calls)
    assert (await answer(model, turn2))[0] == fresh_answer(genai, chat_hef, turn2)
    assert llm.calls[before:] == ["clear_context", "generate"]
    assert model.load().prefix_hit_tokens == 0


async def test_a_follow_up_whose_object_is_busy_loads_its_saved_context_into_another(
    backend: HailoGenaiBackend, chat_hef: Path, genai: ModuleType
) -> None:
    model, x, y, a1, b1 = await two_held(backend, chat_hef, genai, prefix_cache="1")
    conv_a, conv_b = [USER1], [HAT]  # y held nothing before conv_b
    assert (x.calls, y.calls) == (["clear_context", "generate"], ["clear_context", "generate"])
    held_a = context_tokens(genai, conv_a, a1)
    held_b = context_tokens(genai, conv_b, b1)
    assert model.load().cached_prefix_tokens == held_a + held_b

    # A new conversation takes x (used least recently), which saves conversation A first; x
    # stays busy with it.
    genai.GENAI.gate = threading.Event()
    other = await model.generate([{"role": "user", "content": "count them all"}], TALK)
    assert x.calls[2:4] == ["save_context", "clear_context"]
    assert model.load().cached_prefix_tokens == held_a + held_b  # A saved, B held by y

    turn2 = [*conv_a, {"role": "assistant", "content": a1}, USER2]
    follow_up = await model.generate(turn2, TALK)
    # y saves B (prefix_cache=1: A's saved context was taken, B's is the one kept), loads A
    # without clearing (its template goes on from a chat) and sends only the new message.
    assert y.calls[2:4] == ["save_context", "load_context"]
    assert model.load().cached_prefix_tokens == held_b
    genai.GENAI.gate.set()
    assert await collect(follow_up) == fresh_answer(genai, chat_hef, turn2)
    await collect(other)
    assert y.calls[2:] == ["save_context", "load_context", "generate"]
    assert [USER2] in [call["prompt"] for call in genai.GENAI.generations]
    assert model.load().prefix_hit_tokens == held_a

    # B's follow-up loads B's saved context the same way, into the object used least recently
    # (whose conversation is saved in B's place).
    before_x, before_y = len(x.calls), len(y.calls)
    turn_b2 = [*conv_b, {"role": "assistant", "content": b1}, USER2]
    text, _ = await answer(model, turn_b2)
    assert text == fresh_answer(genai, chat_hef, turn_b2)
    assert sorted([x.calls[before_x:], y.calls[before_y:]]) == [
        [],
        ["save_context", "load_context", "generate"],
    ]
    assert genai.GENAI.generations[-2]["prompt"] == [USER2]  # (the last is fresh_answer's)
    assert model.load().prefix_hit_tokens == held_a + held_b


async def test_a_saved_context_never_goes_into_an_object_fresh_from_clear_context(
    backend: HailoGenaiBackend, chat_hef: Path, genai: ModuleType
) -> None:
    """HailoRT's load_context keeps the client's "first prompt" state: an object cleared for a
    completion would template the follow-up as a new chat (default system prompt and all)."""
    model, x, y, a1, b1 = await two_held(backend, chat_hef, genai)
    conv_b = [HAT]
    await collect(await model.generate(PROMPT, TALK))  # on x (least recently used): A saved
    assert x.calls[2:] == ["save_context", "clear_context", "generate"]
    genai.GENAI.gate = threading.Event()
    busy = await model.generate([*conv_b, {"role": "assistant", "content": b1}, USER2], TALK)
    turn2 = [USER1, {"role": "assistant", "content": a1}, USER2]
    follow_up = await model.generate(turn2, TALK)  # only x is idle, and it was cleared
    assert x.calls[5:] == ["clear_context"]  # prefilled whole instead
    genai.GENAI.gate.set()
    await collect(busy)
    assert await collect(follow_up) == fresh_answer(genai, chat_hef, turn2)
    assert "load_context" not in x.calls + y.calls


async def test_without_save_and_load_only_the_holding_object_continues(
    backend: HailoGenaiBackend, chat_hef: Path, genai: ModuleType
) -> None:
    genai.GENAI.version = (5, 1, 0)  # before save_context/load_context
    model, x, y, a1, _ = await two_held(backend, chat_hef, genai)
    await answer(model, [{"role": "user", "content": "count them all"}])  # on x: A is gone
    turn2 = [USER1, {"role": "assistant", "content": a1}, USER2]
    text, _ = await answer(model, turn2)
    assert text == fresh_answer(genai, chat_hef, turn2)
    assert genai.GENAI.generations[-1]["prompt"] == turn2
    assert not {"save_context", "load_context"} & set(x.calls + y.calls)
    assert model.load().prefix_hit_tokens == 0


async def test_cancelled_and_truncated_generations_leave_a_context_that_is_cleared(
    backend: HailoGenaiBackend, chat_hef: Path, genai: ModuleType
) -> None:
    model, llm, a1 = await first_turn(backend, chat_hef, genai)
    turn2 = [USER1, {"role": "assistant", "content": a1}, USER2]
    genai.GENAI.gate = threading.Event()  # held in flight at its first token
    stream = await model.generate(turn2, TALK)  # continues the context...
    closing = asyncio.ensure_future(stream.aclose())  # ...and is cancelled
    await asyncio.sleep(0)
    genai.GENAI.gate.set()
    await closing
    assert stream.completion_tokens <= 1
    genai.GENAI.gate = None
    before = len(llm.calls)
    text, _ = await answer(model, turn2)
    assert llm.calls[before:] == ["clear_context", "generate"]
    assert text == fresh_answer(genai, chat_hef, turn2)

    # A generation that hits its token limit: its answer is not a clean turn either.
    short = await model.generate([USER3], GenerationParams(max_tokens=1, temperature=0))
    cut = await collect(short)
    assert short.finish_reason == "length"
    before = len(llm.calls)
    await answer(model, [USER3, {"role": "assistant", "content": cut}, USER2])
    assert llm.calls[before:] == ["clear_context", "generate"]


def test_prefix_cache_option_is_checked(backend: HailoGenaiBackend, chat_hef: Path) -> None:
    with pytest.raises(BackendError, match="prefix_cache"):
        backend.load(chat_hef, {"prefix_cache": "-1"})
