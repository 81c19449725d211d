"""A conversation through a real agent's OpenAI door on the Hailo-10H GenAI backend (the
HailoRT test double): its second turn continues the device context the first one left, and the
node reports the prompt tokens it did not prefill again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import openai
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc

from tests.agentproc import AgentProcess, free_port, start_agent
from tests.hailodouble import agent_env, write_llm_hef

pytestmark = pytest.mark.integration

WORDS = ["edge", "pool", "board", "tokens", "stream", "quickly.", "<|im_end|>"]


def generation(agent: AgentProcess) -> control_pb2.GenerationStatus:
    with grpc.insecure_channel(agent.address) as channel:
        reply = control_pb2_grpc.AgentControlStub(channel).NodeStatus(
            control_pb2.NodeStatusRequest(), timeout=10
        )
    (model,) = [m for m in reply.models if m.name == "chat"]
    return model.generation


def test_a_second_turn_reuses_the_device_context(tmp_path: Path) -> None:
    hef = write_llm_hef(tmp_path / "chat.hef", words=WORDS)
    sha = hashlib.sha256(hef.read_bytes()).hexdigest()
    http = free_port()
    agent = start_agent(
        [
            "--node-name", "pi-10h",
            "--allow-file-root", str(tmp_path),
            "--http-port", str(http),
            "--model", f"chat@hailo-genai={hef}#sha256={sha}",
        ],
        env=agent_env("hailo10h"),
        timeout=120,
    )  # fmt: skip
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="unused")
        messages: list[dict[str, str]] = [{"role": "user", "content": "tell me about the edge"}]
        first = client.chat.completions.create(
            model="chat",
            messages=messages,
            max_tokens=50,
            temperature=0,  # type: ignore[arg-type]
        )
        assert first.choices[0].finish_reason == "stop"
        assert first.usage is not None
        held = first.usage.prompt_tokens + first.usage.completion_tokens
        assert generation(agent).prefix_hit_tokens == 0
        assert generation(agent).kv_cache_tokens_cached == held

        messages += [
            {"role": "assistant", "content": first.choices[0].message.content or ""},
            {"role": "user", "content": "and the pool?"},
        ]
        second = client.chat.completions.create(
            model="chat",
            messages=messages,
            max_tokens=50,
            temperature=0,  # type: ignore[arg-type]
        )
        assert second.usage is not None
        assert second.usage.prompt_tokens > held  # the whole conversation, as usage counts it
        assert generation(agent).prefix_hit_tokens == held  # ...but only the new turn prefilled
    finally:
        agent.stop()
