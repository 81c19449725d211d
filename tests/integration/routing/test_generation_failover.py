"""Generations through a non-holding entry agent when a holder dies (SIGKILL, real processes).

Before the first token nothing has reached the client, so a dead holder costs nothing: the entry
retries another replica and every answer is the runtime's own greedy output. After the first
token the answer cannot be made whole: the stream must end with an error the client sees (the
`openai` client raises it; Ollama's NDJSON ends with an error line), never a silently short text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from hatswarm_agent.routing.policy import rendezvous

from tests import tritonjobs
from tests.agentproc import free_port
from tests.genaimodels import TinyDecoder, build_endless_model, build_genai_model, reference

from .conftest import Agents

pytestmark = pytest.mark.integration

PROMPT = "hello world, the pool serves"
SLOW = TinyDecoder(
    hidden_size=512, num_heads=8, num_kv_heads=4, num_layers=4, intermediate_size=1024,
    context_length=512,
)  # fmt: skip
ENDLESS_TOKENS = 300


@dataclass(frozen=True)
class Models:
    tiny: Path
    endless: Path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    d = tmp_path_factory.mktemp("generative")
    return Models(
        build_genai_model(d / "tiny", seed=7),
        build_endless_model(d / "endless", PROMPT, ENDLESS_TOKENS, shape=SLOW),
    )


def test_a_holder_lost_before_the_first_token_is_retried_elsewhere(
    agents: Agents, models: Models
) -> None:
    _, tokens, text = reference(models.tiny, "hello world", 16, chat=True, do_sample=False)
    lost = agents.start(
        ["--node-name", "lost", "--model", f"tiny@genai={models.tiny}"], timeout=120
    )
    alive = agents.start(
        ["--node-name", "alive", "--model", f"tiny@genai={models.tiny}"], timeout=120
    )
    http, metrics = free_port(), free_port()
    agents.start(
        [
            "--node-name", "entry", "--http-port", str(http),
            "--metrics-port", str(metrics),
            "--peer", f"tiny={lost.address}", "--peer", f"tiny={alive.address}",
        ]
    )  # fmt: skip
    lost.kill()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="x", max_retries=0)
    # Conversations whose affine node is the dead holder: each is tried there first (until the
    # entry ejects it), then on the live one.
    replicas = [lost.address, alive.address]
    names = (f"s{i}" for i in range(64))
    sessions = [s for s in names if rendezvous(f"session:{s}", replicas) == lost.address]
    for session in sessions[:6]:
        raw = client.chat.completions.with_raw_response.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello world"}],
            max_tokens=16,
            temperature=0,
            stream=True,
            user=session,
        )
        assert raw.headers["x-hatswarm-node"] == "alive"
        chunks = list(raw.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(tokens)
    scrape = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
    retries = next(
        float(line.split()[-1])
        for line in scrape.splitlines()
        if line.startswith("hatswarm_route_retries_total ")
    )
    assert retries >= 1  # the dead holder was tried, and the client never knew


@pytest.mark.parametrize("door", ["openai", "ollama", "triton"])
def test_a_holder_lost_after_the_first_token_ends_the_stream_with_an_error(
    agents: Agents, models: Models, door: str
) -> None:
    holder = agents.start(
        ["--node-name", "holder", "--model", f"endless@genai={models.endless}"], timeout=120
    )
    http = free_port()
    agents.start(
        ["--node-name", "entry", "--http-port", str(http), "--peer", f"endless={holder.address}"]
    )
    base = f"http://127.0.0.1:{http}"
    if door == "triton":
        entry = agents.started[-1]
        request = {
            "id": "r",
            "prompt": PROMPT,
            "sampling": {"max_tokens": ENDLESS_TOKENS, "temperature": 0},
        }
        responses = tritonjobs.run(
            tritonjobs.stream_generate,
            entry.address,
            "endless",
            [request],
            60.0,
            None,
            holder.proc.pid,
        )
        assert responses[0]["text"] and not responses[0]["final"]  # it had started
        assert "broke off" in (responses[-1]["error"] or "")
        assert not any(r["final"] for r in responses)  # never a clean end
        assert len(responses) < ENDLESS_TOKENS
        return
    if door == "openai":
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        stream = client.completions.create(
            model="endless", prompt=PROMPT, max_tokens=ENDLESS_TOKENS, temperature=0, stream=True
        )
        received: list[str] = []

        def read_all() -> None:
            for chunk in stream:
                if not received:
                    holder.kill()
                received.append(chunk.choices[0].text if chunk.choices else "")

        with pytest.raises(openai.APIError) as info:
            read_all()
        assert "broke off" in str(info.value)
        assert 0 < len(received) < ENDLESS_TOKENS
        return
    body = {
        "model": "endless",
        "prompt": PROMPT,
        "raw": True,
        "options": {"num_predict": ENDLESS_TOKENS, "temperature": 0},
    }
    lines = []
    with httpx.stream("POST", f"{base}/api/generate", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if not line:
                continue
            if not lines:
                holder.kill()
            lines.append(json.loads(line))
    assert "broke off" in lines[-1]["error"]
    assert not any(line.get("done") for line in lines)  # never a clean end
    assert 1 < len(lines) < ENDLESS_TOKENS
