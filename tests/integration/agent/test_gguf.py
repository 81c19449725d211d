"""A GGUF model under llama.cpp on real agent processes: the `openai` client streams a chat
through an agent that does not hold the model, and gets llama-cpp-python's own greedy tokens.

Two agents: a holder serving a tiny random-weight GGUF (tests/ggufmodels.py) given on the
command line with its sha256 (the `.gguf` suffix picks the llama.cpp backend), and an entry
agent holding nothing, with the holder as its peer. A second copy is loaded over LoadModel with
`format: gguf` and no suffix, as the operator sends an EdgeModel's cpu artifact, and a third in
llama.cpp's embedding mode (`embedding: true`) serves `/v1/embeddings`.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import openai
import pytest
from hatswarm_agent.backends.base import BackendError
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc

from tests.agentproc import AgentProcess, free_port, start_agent
from tests.externaltools import missing
from tests.ggufmodels import build_gguf_model, reference_chat, reference_text

pytestmark = pytest.mark.integration

PROMPT = "hello world"
COMPLETION_PROMPT = "hello world, the pool serves"
MAX_TOKENS = 24


def _unavailable() -> str | None:
    try:
        from hatswarm_agent.backends.llamacpp import LlamaCppBackend

        LlamaCppBackend()
    except BackendError as exc:
        return str(exc)
    return None


@dataclass
class Pool:
    holder: AgentProcess
    entry: AgentProcess
    holder_http: str
    entry_http: str
    model: Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    reason = _unavailable()
    if reason is not None:
        missing("llama-cpp-python", "run `make gguf`: " + reason)
    d = tmp_path_factory.mktemp("gguf-pool")
    model = build_gguf_model(d / "tiny.gguf", seed=7)
    blob = d / "blob-0001"  # no suffix: the LoadModel's format says what it is
    shutil.copy(model, blob)
    holder_http, entry_http = free_port(), free_port()
    holder = start_agent(
        [
            "--node-name", "holder",
            "--allow-file-root", str(d),
            "--http-port", str(holder_http),
            "--model", f"tiny={model}#sha256={sha256(model)}",
        ],
        timeout=120,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(holder.address) as channel:
            control = control_pb2_grpc.AgentControlStub(channel)
            status = control.LoadModel(
                control_pb2.LoadModelRequest(
                    name="blob", uri=str(blob), sha256=sha256(blob), format="gguf"
                ),
                timeout=120,
            )
            assert status.state == control_pb2.MODEL_STATE_READY, status.reason
            vec = control.LoadModel(  # the same file in llama.cpp's embedding mode
                control_pb2.LoadModelRequest(
                    name="vec", uri=str(blob), sha256=sha256(blob), format="gguf",
                    options={"embedding": "true", "pooling": "mean"},
                ),
                timeout=120,
            )  # fmt: skip
            assert vec.state == control_pb2.MODEL_STATE_READY, vec.reason
            refused = control.LoadModel(
                control_pb2.LoadModelRequest(
                    name="forged", uri=str(blob), sha256="0" * 64, format="gguf"
                ),
                timeout=120,
            )
            assert refused.state == control_pb2.MODEL_STATE_FAILED
            assert "sha256" in refused.reason
        peers = [f"--peer={m}={holder.address}" for m in ("tiny", "blob", "vec")]
        entry = start_agent(["--node-name", "entry", "--http-port", str(entry_http), *peers])
    except BaseException:
        holder.stop()
        raise
    yield Pool(
        holder, entry, f"http://127.0.0.1:{holder_http}", f"http://127.0.0.1:{entry_http}", model
    )
    entry.stop()
    holder.stop()


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="not-needed")


def test_openai_streams_a_chat_from_llama_cpp_through_an_agent_that_does_not_hold_it(
    pool: Pool,
) -> None:
    text, prompt_tokens, completion_tokens = reference_chat(pool.model, PROMPT, MAX_TOKENS)
    stream = client(pool.entry_http).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == text
    assert len([p for p in pieces if p]) > 1  # streamed, not one lump
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens, completion_tokens)


def test_a_gguf_loaded_by_format_serves_completions(pool: Pool) -> None:
    text, prompt_tokens, completion_tokens = reference_text(pool.model, COMPLETION_PROMPT, 12)
    assert completion_tokens > 2 and text
    c = client(pool.entry_http)
    raw = c.completions.with_raw_response.create(
        model="blob", prompt=COMPLETION_PROMPT, max_tokens=12, temperature=0
    )
    assert raw.headers["x-hatswarm-node"] == "holder"
    completion = raw.parse()
    assert completion.choices[0].text == text
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == prompt_tokens
    assert completion.usage.completion_tokens == completion_tokens
    assert {"tiny", "blob"} <= {m.id for m in c.models.list()}


def test_embeddings_equal_llama_cpp_own_vectors_as_floats_and_base64(pool: Pool) -> None:
    import llama_cpp

    texts = ["hello world", "the quick brown fox jumps over the lazy dog."]
    llm = llama_cpp.Llama(
        model_path=str(pool.model), embedding=True, n_ctx=256, n_batch=256, n_ubatch=256,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False,
    )  # fmt: skip
    try:
        vectors, tokens = llm.embed(texts, normalize=True, return_count=True)
    finally:
        llm.close()
    expected = np.asarray(vectors, dtype=np.float32)
    c = client(pool.entry_http)
    for answer in (
        c.embeddings.create(model="vec", input=texts),  # the client asks for base64
        c.embeddings.create(model="vec", input=texts, encoding_format="float"),
    ):
        got = np.array([d.embedding for d in answer.data], dtype=np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert answer.usage.prompt_tokens == tokens
