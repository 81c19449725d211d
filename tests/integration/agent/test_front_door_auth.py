"""The HTTP doors and ModelStreamInfer behind the pool token (`--auth-token-file`).

Every door wants `Authorization: Bearer <token>` (the `openai` client's API key), answers 401
in its own error shape without it, and leaves the health checks open; a generation an entry
agent forwards carries the pool token to the holder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests import tritonjobs
from tests.agentproc import AgentProcess, free_port, start_agent
from tests.genaimodels import build_genai_model, reference

pytestmark = pytest.mark.integration

TOKEN = "s3cret-pool-token"


@dataclass
class Secured:
    entry: AgentProcess
    http: str
    tiny: Path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    d = tmp_path_factory.mktemp("auth")
    tiny = build_genai_model(d / "tiny", seed=7)
    token = d / "token"
    token.write_text(TOKEN + "\n")
    control = d / "control"
    control.write_text("control-" + TOKEN + "\n")
    # The pool's control token too: hops carry the peer credential derived from it.
    auth = ["--auth-token-file", str(token), "--control-token-file", str(control)]
    holder = start_agent(
        ["--node-name", "holder", "--model", f"tiny@genai={tiny}", *auth], timeout=120
    )
    http = free_port()
    try:
        entry = start_agent(
            [
                "--node-name",
                "entry",
                "--http-port",
                str(http),
                f"--peer=tiny={holder.address}",
                *auth,
            ]
        )
    except BaseException:
        holder.stop()
        raise
    yield Secured(entry, f"http://127.0.0.1:{http}", tiny)
    entry.stop()
    holder.stop()


def test_every_door_wants_the_token_and_health_stays_open(secured: Secured) -> None:
    base = secured.http
    assert httpx.get(f"{base}/v2/health/live").status_code == 200
    assert httpx.get(f"{base}/v2/health/ready").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
    ollama = httpx.post(f"{base}/api/generate", json={"model": "tiny", "prompt": "hi"})
    assert ollama.status_code == 401 and "bearer" in ollama.json()["error"]
    rest = httpx.get(f"{base}/v2/models/tiny")
    assert rest.status_code == 401 and rest.headers["www-authenticate"] == "Bearer"


def test_with_the_token_a_generation_crosses_the_pool(secured: Secured) -> None:
    _, _, text = reference(secured.tiny, "hello world", 8, chat=True, do_sample=False)
    client = openai.OpenAI(base_url=f"{secured.http}/v1", api_key=TOKEN, max_retries=0)
    chat = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello world"}],
        max_tokens=8,
        temperature=0,
    )
    assert chat.choices[0].message.content == text


def test_model_stream_infer_wants_the_token(secured: Secured) -> None:
    request = [
        {"id": "a", "prompt": "hello world", "sampling": {"max_tokens": 4, "temperature": 0}}
    ]
    refused = tritonjobs.run(
        tritonjobs.stream_generate, secured.entry.address, "tiny", request, 60.0
    )
    assert refused and "bearer token" in (refused[0]["error"] or "")
    allowed = tritonjobs.run(
        tritonjobs.stream_generate, secured.entry.address, "tiny", request, 60.0,
        {"authorization": f"Bearer {TOKEN}"},
    )  # fmt: skip
    assert not [r for r in allowed if r["error"]] and allowed[-1]["final"] is True
